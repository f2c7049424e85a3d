"""MTCNN in TensorFlow 2: the three networks, their original weights, the batched detector."""
from tfface_align.mtcnn.detector import MTCNN, Faces
from tfface_align.mtcnn.networks import build_onet, build_pnet, build_rnet
from tfface_align.mtcnn.weights import build_net, load_net_weights

__all__ = ["MTCNN", "Faces", "build_net", "build_onet", "build_pnet", "build_rnet", "load_net_weights"]

"""Backbones: images -> embeddings. ``get_backbone(name, ...)`` builds any registered one."""
from tfface.models import mobilefacenet  # noqa: F401  (registers its backbone)
from tfface.models import dlib_resnet  # noqa: F401  (registers dlib_resnet_v1)
from tfface.models import insightface_ir, seqface, sphereface  # noqa: F401  (register their backbones)
from tfface.models import iresnet  # noqa: F401  (registers iresnet18/34/50/100/200)
from tfface.models.embedder import build_embedder
from tfface.models.layers import InputShapeError
from tfface.models.facenet_import import import_facenet_pytorch, import_facenet_tf1_checkpoint  # noqa: F401  (registers inception_resnet_v1)
from tfface.models.registry import default_input_shape, get_backbone, has_dropout, list_backbones, register_backbone

__all__ = [
    "InputShapeError", "build_embedder", "default_input_shape", "get_backbone", "has_dropout", "list_backbones", "register_backbone",
]

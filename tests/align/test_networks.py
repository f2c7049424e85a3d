"""P-Net, R-Net, O-Net: weights load and outputs match the `mtcnn` package's nets."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface_align.mtcnn import build_net, load_net_weights
from tfface_align.mtcnn.weights import FACENET_FILES, cache_dir

SHAPES = {"pnet": (2, 41, 57, 3), "rnet": (6, 24, 24, 3), "onet": (6, 48, 48, 3)}


def _reference(net: str):
    stages = pytest.importorskip("mtcnn.stages")
    stage = {"pnet": stages.StagePNet, "rnet": stages.StageRNet, "onet": stages.StageONet}[net]
    return stage()._model


def _inputs(net: str, faces_dir: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, SHAPES[net]).astype(np.float32)
    if faces_dir:  # real face pixels in the first sample
        import cv2

        face = cv2.imread(os.path.join(faces_dir, "img25.jpg"))[80:290, 120:290, ::-1]
        x[0] = (cv2.resize(face, SHAPES[net][1:3][::-1]).astype(np.float32) - 127.5) / 128
    return x


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_outputs_match_mtcnn_package(net, testdata_dir):
    ours = build_net(net)
    x = _inputs(net, os.path.join(testdata_dir, "faces"))
    for a, b in zip(ours(x), _reference(net)(x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_pnet_is_fully_convolutional():
    reg, prob = build_net("pnet")(np.zeros((1, 12, 12, 3), np.float32))
    assert reg.shape == (1, 1, 1, 4) and prob.shape == (1, 1, 1, 2)
    reg, prob = build_net("pnet")(np.zeros((3, 100, 60, 3), np.float32))
    assert reg.shape == (3, 45, 25, 4)
    np.testing.assert_allclose(np.asarray(prob).sum(-1), 1.0, atol=1e-5)


def test_converted_weights_are_cached_as_npz():
    load_net_weights("rnet")
    cached = [f for f in os.listdir(cache_dir()) if f.startswith("rnet-")]
    assert cached and cached[0].endswith(".npz")
    again = load_net_weights("rnet")  # from the cache
    assert again["fc4"][0].shape == (576, 128)


# facenet's det*.npy rebuilt from facenet-pytorch's state dicts (converted from the same Caffe
# models; its conv kernels are (out, in, kw, kh) of facenet's (kh, kw, in, out)). Runs in a
# subprocess: torch and TensorFlow in one process can crash.
_TORCH_TO_FACENET = r"""
import importlib.util, os, sys
import numpy as np, torch
# The package's __init__ imports torchvision (not needed, not installed): locate its data only.
root = list(importlib.util.find_spec("facenet_pytorch").submodule_search_locations)[0]
renames = {"pnet": {"conv4_1": "conv4-1", "conv4_2": "conv4-2", "prelu1": "PReLU1", "prelu2": "PReLU2",
                    "prelu3": "PReLU3"},
           "rnet": {"dense4": "conv4", "dense5_1": "conv5-1", "dense5_2": "conv5-2"},
           "onet": {"dense5": "conv5", "dense6_1": "conv6-1", "dense6_2": "conv6-2", "dense6_3": "conv6-3"}}
for net, name in (("pnet", "det1.npy"), ("rnet", "det2.npy"), ("onet", "det3.npy")):
    data = os.path.join(root, "data", net + ".pt")
    layers = {}
    for key, value in torch.load(data, map_location="cpu").items():
        layer, kind = key.split(".")
        value = value.numpy()
        entry = layers.setdefault(renames[net].get(layer, layer), {})
        if value.ndim == 4:
            entry["weights"] = value.transpose(3, 2, 1, 0)
        elif value.ndim == 2:
            entry["weights"] = value.T
        elif layer.startswith("prelu"):
            entry["alpha"] = value
        else:
            entry["biases"] = value
    np.save(os.path.join(sys.argv[1], name), layers, allow_pickle=True)
"""


@pytest.fixture(scope="module")
def facenet_dir(tmp_path_factory) -> str:
    import importlib.util
    import subprocess
    import sys

    if not (importlib.util.find_spec("torch") and importlib.util.find_spec("facenet_pytorch")):
        pytest.skip("torch / facenet-pytorch not installed")
    path = str(tmp_path_factory.mktemp("facenet"))
    subprocess.run([sys.executable, "-c", _TORCH_TO_FACENET, path], check=True, timeout=300)
    return path


@pytest.mark.slow  # the torch subprocess alone takes ~10-30 s on 2 loaded cores
@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_facenet_npy_weights_match(net, facenet_dir):
    path = os.path.join(facenet_dir, FACENET_FILES[net])
    x = _inputs(net)
    for a, b in zip(build_net(net, path)(x), _reference(net)(x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_facenet_npy_with_missing_layer_is_a_user_error(tmp_path):
    path = str(tmp_path / "det1.npy")
    np.save(path, {"conv1": {"weights": np.zeros((3, 3, 3, 10)), "biases": np.zeros(10)}}, allow_pickle=True)
    with pytest.raises(UserError, match="PReLU1"):
        build_net("pnet", path)
    with pytest.raises(UserError, match="does not exist"):
        build_net("pnet", str(tmp_path / "nope.npy"))

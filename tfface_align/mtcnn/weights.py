"""The original MTCNN weights, read from local files only (nothing is downloaded).

Two sources:

* the assets of the installed ``mtcnn`` PyPI package (MIT; ``mtcnn/assets/weights/{p,r,o}net.lz4``),
  the default. These are joblib pickles shipped inside an installed package.
* facenet's ``det1.npy`` / ``det2.npy`` / ``det3.npy`` (davidsandberg/facenet, ``src/align``).
  **These are NumPy pickles: loading one can run arbitrary code. Pass only files you trust.**

Either source is converted once into ``{layer name: [arrays]}`` and cached as a plain ``.npz``
(no pickle) in the user's cache directory (``$TFFACE_CACHE_DIR``, else
``$XDG_CACHE_HOME/tfface/mtcnn``, else ``~/.cache/tfface/mtcnn``); later loads read the ``.npz``.
A read-only or missing cache directory only disables the cache.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
from typing import Callable

import numpy as np

from tfface.core.errors import UserError
from tfface_align.mtcnn.networks import BUILDERS

NETS = ("pnet", "rnet", "onet")
FACENET_FILES = {"pnet": "det1.npy", "rnet": "det2.npy", "onet": "det3.npy"}

# facenet's layer names, in the order of our layers (see networks.*_LAYERS). facenet numbers the
# heads differently: its "-1" head is the face probability, ours (the `mtcnn` package's) the boxes.
_FACENET_NAMES = {
    "pnet": ("conv1", "PReLU1", "conv2", "PReLU2", "conv3", "PReLU3", "conv4-2", "conv4-1"),
    "rnet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
             "conv5-2", "conv5-1"),
    "onet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
             "conv5", "prelu5", "conv6-2", "conv6-3", "conv6-1"),
}
# Number of arrays each of our layers holds, by the first letters of its name.
_ARRAYS = {"conv": 2, "fc": 2, "prelu": 1}


def cache_dir() -> str:
    """The directory where converted weights are cached."""
    if os.environ.get("TFFACE_CACHE_DIR"):
        return os.path.join(os.environ["TFFACE_CACHE_DIR"], "mtcnn")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfface", "mtcnn")


def _layer_names(net: str) -> tuple[str, ...]:
    return BUILDERS[net][1]


def _split_package_list(net: str, arrays: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The `mtcnn` package stores a flat list in layer order; regroup it by layer name."""
    out, pos = {}, 0
    for name in _layer_names(net):
        count = _ARRAYS[name.rstrip("0123456789-")]
        out[name] = [np.asarray(a, np.float32) for a in arrays[pos:pos + count]]
        pos += count
    if pos != len(arrays):
        raise ValueError(f"{net}: expected {pos} weight arrays, the package file has {len(arrays)}")
    return out


def _convert_facenet(net: str, layers: dict) -> dict[str, list[np.ndarray]]:
    """facenet's dict of layers -> ours: conv kernels are swapped in (kh, kw), because the Caffe
    models expect transposed images and ours take images as they are; dense layers keep their
    layout (our ``permute`` layer reproduces the transposed flattening)."""
    out = {}
    for ours, theirs in zip(_layer_names(net), _FACENET_NAMES[net]):
        if theirs not in layers:
            raise UserError(f"{FACENET_FILES[net]}: layer '{theirs}' missing (is this facenet's {FACENET_FILES[net]}?)")
        src = layers[theirs]
        if ours.startswith("prelu"):
            alpha = np.asarray(src["alpha"], np.float32)
            out[ours] = [alpha]  # shaped to the layer in build_net
        elif ours.startswith("conv"):
            out[ours] = [np.asarray(src["weights"], np.float32).transpose(1, 0, 2, 3),
                         np.asarray(src["biases"], np.float32)]
        else:
            out[ours] = [np.asarray(src["weights"], np.float32), np.asarray(src["biases"], np.float32)]
    return out


def _read_package(net: str) -> tuple[bytes, Callable[[], dict]]:
    try:
        path = importlib.resources.files("mtcnn.assets.weights") / f"{net}.lz4"
        raw = path.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise UserError(f"MTCNN weights: the 'mtcnn' package (pip install mtcnn) is needed for the "
                        f"default weights ({err})") from err

    def convert() -> dict:
        import joblib  # installed with the `mtcnn` package

        return _split_package_list(net, joblib.load(str(path)))

    return raw, convert


def _read_facenet(net: str, path: str) -> tuple[bytes, Callable[[], dict]]:
    if not os.path.isfile(path):
        raise UserError(f"weights: file '{path}' does not exist (expected facenet's {FACENET_FILES[net]})")
    with open(path, "rb") as f:
        raw = f.read()

    def convert() -> dict:
        layers = np.load(path, allow_pickle=True, encoding="latin1").item()  # trusted files only
        return _convert_facenet(net, layers)

    return raw, convert


def load_net_weights(net: str, facenet_file: str | None = None) -> dict[str, list[np.ndarray]]:
    """Weights of ``net`` (``"pnet"``, ``"rnet"`` or ``"onet"``) as ``{layer name: [arrays]}``.

    Args:
        net: which network.
        facenet_file: path of facenet's ``det1/2/3.npy`` (a pickle: trusted files only); default
            the assets of the installed ``mtcnn`` package.
    """
    if net not in NETS:
        raise ValueError(f"net: expected one of {NETS}, got {net!r}")
    raw, convert = _read_facenet(net, facenet_file) if facenet_file else _read_package(net)
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cached = os.path.join(cache_dir(), f"{net}-{digest}.npz")
    if os.path.isfile(cached):
        try:
            with np.load(cached, allow_pickle=False) as data:
                return {name: [data[f"{name}/{i}"] for i in range(_ARRAYS[name.rstrip("0123456789-")])]
                        for name in _layer_names(net)}
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache entry: convert again
    weights = convert()
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = f"{cached}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **{f"{name}/{i}": a for name, arrays in weights.items() for i, a in enumerate(arrays)})
        os.replace(tmp, cached)
    except OSError:
        pass  # no writable cache: fine, convert again next time
    return weights


def build_net(net: str, facenet_file: str | None = None):
    """Builds the Keras model of ``net`` and loads its original weights."""
    builder = BUILDERS[net][0]
    model = builder()
    for name, arrays in load_net_weights(net, facenet_file).items():
        layer = model.get_layer(name)
        expected = [w.shape for w in layer.get_weights()]
        if [a.size for a in arrays] != [int(np.prod(s)) for s in expected]:
            raise UserError(f"{net} layer '{name}': weights of shapes {[a.shape for a in arrays]}, "
                            f"expected {expected}")
        layer.set_weights([a.reshape(s) for a, s in zip(arrays, expected)])
    return model

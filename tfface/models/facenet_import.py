"""Pretrained FaceNet weights -> :class:`~tfface.models.inception_resnet_v1.InceptionResnetV1`.

Two sources, both of the 2018 facenet models (20180402-114759 trained on VGGFace2,
20180408-102900 on CASIA-WebFace) and of any model trained with facenet's
``models.inception_resnet_v1``:

* :func:`import_facenet_pytorch`: a facenet-pytorch ``InceptionResnetV1`` state dict (their
  ``20180402-114759-vggface2.pt`` / ``20180408-102900-casia-webface.pt`` releases, or any
  ``model.state_dict()``). facenet-pytorch's BatchNorms carry a gamma, so the model is built
  with ``bn_scale=True``.
* :func:`import_facenet_tf1_checkpoint`: facenet's own TF1 files: the checkpoint
  (``model-20180402-114759.ckpt-275``, its directory) or the frozen graph
  (``20180402-114759.pb``). Read with TF2 APIs only (no ``tf.compat.v1`` session, no
  ``.meta``); variables are found by their TF-slim names, e.g.
  ``InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/weights``.

Nothing is downloaded: the caller passes local files. The imported model outputs raw
embeddings; facenet and facenet-pytorch compare L2-normalised ones, and its input is
facenet's ``fixed_image_standardization`` ((pixels - 127.5) / 128).
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from tfface.models.inception_resnet_v1 import REPEAT_1, REPEAT_2, REPEAT_3, InceptionResnetV1

SLIM_ROOT = "InceptionResnetV1"


@dataclass(frozen=True)
class _Unit:
    """One weight-carrying unit named in the three implementations."""

    keras: str  # InceptionResnetV1 layer name (prefix of "<keras>_conv" / "<keras>_bn" for conv_bn)
    torch: str  # facenet-pytorch module path
    slim: str  # facenet variable scope below "InceptionResnetV1/"
    kind: str  # "conv_bn" (conv without bias + BN) | "conv" (with bias) | "dense" | "bn"


_BLOCK35_BRANCHES = (
    ("branch0", "Branch_0/Conv2d_1x1"),
    ("branch1_0", "Branch_1/Conv2d_0a_1x1"),
    ("branch1_1", "Branch_1/Conv2d_0b_3x3"),
    ("branch2_0", "Branch_2/Conv2d_0a_1x1"),
    ("branch2_1", "Branch_2/Conv2d_0b_3x3"),
    ("branch2_2", "Branch_2/Conv2d_0c_3x3"),
)
_BLOCK17_BRANCHES = (
    ("branch0", "Branch_0/Conv2d_1x1"),
    ("branch1_0", "Branch_1/Conv2d_0a_1x1"),
    ("branch1_1", "Branch_1/Conv2d_0b_1x7"),
    ("branch1_2", "Branch_1/Conv2d_0c_7x1"),
)
_BLOCK8_BRANCHES = (
    ("branch0", "Branch_0/Conv2d_1x1"),
    ("branch1_0", "Branch_1/Conv2d_0a_1x1"),
    ("branch1_1", "Branch_1/Conv2d_0b_1x3"),
    ("branch1_2", "Branch_1/Conv2d_0c_3x1"),
)
_MIXED_6A_BRANCHES = (
    ("branch0", "Branch_0/Conv2d_1a_3x3"),
    ("branch1_0", "Branch_1/Conv2d_0a_1x1"),
    ("branch1_1", "Branch_1/Conv2d_0b_3x3"),
    ("branch1_2", "Branch_1/Conv2d_1a_3x3"),
)
_MIXED_7A_BRANCHES = (
    ("branch0_0", "Branch_0/Conv2d_0a_1x1"),
    ("branch0_1", "Branch_0/Conv2d_1a_3x3"),
    ("branch1_0", "Branch_1/Conv2d_0a_1x1"),
    ("branch1_1", "Branch_1/Conv2d_1a_3x3"),
    ("branch2_0", "Branch_2/Conv2d_0a_1x1"),
    ("branch2_1", "Branch_2/Conv2d_0b_3x3"),
    ("branch2_2", "Branch_2/Conv2d_1a_3x3"),
)
_STEM = (
    ("conv2d_1a", "Conv2d_1a_3x3"),
    ("conv2d_2a", "Conv2d_2a_3x3"),
    ("conv2d_2b", "Conv2d_2b_3x3"),
    ("conv2d_3b", "Conv2d_3b_1x1"),
    ("conv2d_4a", "Conv2d_4a_3x3"),
    ("conv2d_4b", "Conv2d_4b_3x3"),
)


def _branches(keras: str, torch: str, slim: str, branches) -> Iterator[_Unit]:
    for suffix, scope in branches:
        yield _Unit(f"{keras}_{suffix}", f"{torch}.{suffix.replace('_', '.')}", f"{slim}/{scope}", "conv_bn")


def _residual_block(keras: str, torch: str, slim: str, branches) -> Iterator[_Unit]:
    yield from _branches(keras, torch, slim, branches)
    yield _Unit(f"{keras}_conv2d", f"{torch}.conv2d", f"{slim}/Conv2d_1x1", "conv")


def _units() -> Iterator[_Unit]:
    """Every unit of the network, in forward order."""
    for keras, slim in _STEM:
        yield _Unit(keras, keras, slim, "conv_bn")
    # slim.repeat names its scopes Repeat, Repeat_1, Repeat_2 and the blocks <fn>_1..<fn>_n.
    for i in range(REPEAT_1[0]):
        yield from _residual_block(f"repeat_1_{i}", f"repeat_1.{i}", f"Repeat/block35_{i + 1}", _BLOCK35_BRANCHES)
    yield from _branches("mixed_6a", "mixed_6a", "Mixed_6a", _MIXED_6A_BRANCHES)
    for i in range(REPEAT_2[0]):
        yield from _residual_block(f"repeat_2_{i}", f"repeat_2.{i}", f"Repeat_1/block17_{i + 1}", _BLOCK17_BRANCHES)
    yield from _branches("mixed_7a", "mixed_7a", "Mixed_7a", _MIXED_7A_BRANCHES)
    for i in range(REPEAT_3[0]):
        yield from _residual_block(f"repeat_3_{i}", f"repeat_3.{i}", f"Repeat_2/block8_{i + 1}", _BLOCK8_BRANCHES)
    yield from _residual_block("block8", "block8", "Block8", _BLOCK8_BRANCHES)
    yield _Unit("last_linear", "last_linear", "Bottleneck", "dense")
    yield _Unit("last_bn", "last_bn", "Bottleneck/BatchNorm", "bn")


def _layer_sources(naming: str) -> Iterator[tuple[str, str]]:
    """(Keras layer name, source prefix) of every weight-carrying layer, for ``naming``."""
    for unit in _units():
        if naming == "torch":
            if unit.kind == "conv_bn":
                yield f"{unit.keras}_conv", f"{unit.torch}.conv"
                yield f"{unit.keras}_bn", f"{unit.torch}.bn"
            else:
                yield unit.keras, unit.torch
        else:
            scope = f"{SLIM_ROOT}/{unit.slim}"
            if unit.kind == "conv_bn":
                yield f"{unit.keras}_conv", scope
                yield f"{unit.keras}_bn", f"{scope}/BatchNorm"
            else:
                yield unit.keras, scope


_TORCH_PARAMS = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_SLIM_PARAMS = {
    "kernel": "weights",
    "bias": "biases",
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance",
}


def _layer_params(layer) -> list[tuple[str, Any]]:
    """(parameter kind, variable) of a Conv2D, Dense or BatchNormalization layer."""
    if hasattr(layer, "moving_mean"):
        params = [("gamma", layer.gamma)] if layer.scale else []
        return params + [("beta", layer.beta), ("moving_mean", layer.moving_mean), ("moving_variance", layer.moving_variance)]
    params = [("kernel", layer.kernel)]
    if layer.use_bias:
        params.append(("bias", layer.bias))
    return params


def _assign(
    model: InceptionResnetV1,
    naming: str,
    fetch: Callable[[str], np.ndarray],
) -> set[str]:
    """Copies every weight of ``model`` from ``fetch(source name)``; returns the names used."""
    separator, param_names = (".", _TORCH_PARAMS) if naming == "torch" else ("/", _SLIM_PARAMS)
    used: set[str] = set()
    assigned = 0
    for layer_name, prefix in _layer_sources(naming):
        layer = model.get_layer(layer_name)
        for kind, variable in _layer_params(layer):
            key = f"{prefix}{separator}{param_names[kind]}"
            value = np.asarray(fetch(key), dtype=np.float32)
            if kind == "kernel" and naming == "torch":
                # torch Conv2d (out, in, kh, kw) -> (kh, kw, in, out); Linear (out, in) -> (in, out)
                value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{key}: expected shape {tuple(variable.shape)} for layer {layer_name!r}, got {tuple(value.shape)}"
                )
            variable.assign(value)
            used.add(key)
            assigned += 1
    if assigned != len(model.weights):
        raise RuntimeError(f"assigned {assigned} of the model's {len(model.weights)} weights; the name map is incomplete")
    return used


def _torch_state_dict(state_dict: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    if isinstance(state_dict, Mapping):
        raw = dict(state_dict)
    elif str(state_dict).endswith(".npz"):
        with np.load(state_dict) as archive:
            raw = {name: archive[name] for name in archive.files}
    else:
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                "reading a PyTorch .pt file needs torch; alternatively pass a dict of numpy arrays or a .npz "
                "written with numpy.savez(path, **{k: v.numpy() for k, v in state_dict.items()})"
            ) from error
        raw = torch.load(os.fspath(state_dict), map_location="cpu", weights_only=True)
    if raw and all(name.startswith("module.") for name in raw):  # saved from nn.DataParallel
        raw = {name[len("module."):]: value for name, value in raw.items()}
    return {name: value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value) for name, value in raw.items()}


def import_facenet_pytorch(
    state_dict: str | os.PathLike | Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int] = (160, 160, 3),
    keep_probability: float = 0.8,
) -> InceptionResnetV1:
    """Builds ``inception_resnet_v1`` (``bn_scale=True``) holding facenet-pytorch weights.

    Args:
        state_dict: a facenet-pytorch ``InceptionResnetV1`` state dict: a ``.pt`` path (needs
            torch; loaded with ``weights_only=True``), a ``.npz`` of the same names, or a mapping
            name -> tensor/array. ``logits.*`` (the classifier) and ``num_batches_tracked``
            entries are ignored; any other unknown entry is an error.
        input_shape: model input (H, W, 3); the weights work at any size >= 75.
        keep_probability: dropout keep probability used when fine-tuning.

    Returns:
        The Keras model; ``embedding_size`` is read from ``last_linear.weight``. Its output is
        the un-normalised embedding: facenet-pytorch's ``forward`` returns it L2-normalised.
    """
    weights = _torch_state_dict(state_dict)
    if "last_linear.weight" not in weights:
        raise ValueError("not a facenet-pytorch InceptionResnetV1 state dict: no 'last_linear.weight' entry")
    model = InceptionResnetV1(
        input_shape=input_shape,
        embedding_size=int(weights["last_linear.weight"].shape[0]),
        keep_probability=keep_probability,
        bn_scale=True,
    )

    def fetch(name: str) -> np.ndarray:
        if name not in weights:
            raise KeyError(f"facenet-pytorch state dict has no {name!r}")
        return weights[name]

    used = _assign(model, "torch", fetch)
    unexpected = sorted(
        name for name in weights if name not in used and not name.startswith("logits.") and not name.endswith("num_batches_tracked")
    )
    if unexpected:
        raise ValueError(f"unexpected entries in the facenet-pytorch state dict: {unexpected[:10]}")
    return model


def _tf1_tensors(path: str | os.PathLike) -> Callable[[str], np.ndarray]:
    """A name -> array reader over a TF1 checkpoint (prefix or directory) or a frozen GraphDef."""
    import tensorflow as tf

    path = os.fspath(path)
    if path.endswith(".pb"):
        graph_def = tf.compat.v1.GraphDef()
        with tf.io.gfile.GFile(path, "rb") as f:
            graph_def.ParseFromString(f.read())
        constants = {node.name: node for node in graph_def.node if node.op == "Const"}

        def read_const(name: str) -> np.ndarray:
            if name not in constants:
                raise KeyError(f"{path} has no constant {name!r}")
            return tf.make_ndarray(constants[name].attr["value"].tensor)

        return read_const
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            indexes = sorted(glob.glob(os.path.join(path, "*.ckpt*.index")))
            if len(indexes) != 1:
                raise FileNotFoundError(f"expected one '*.ckpt*.index' checkpoint in {path}, found {len(indexes)}")
            prefix = indexes[0][: -len(".index")]
        path = prefix
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()

    def read_variable(name: str) -> np.ndarray:
        if name not in shapes:
            raise KeyError(f"checkpoint {path} has no variable {name!r}")
        return reader.get_tensor(name)

    return read_variable


def import_facenet_tf1_checkpoint(
    path: str | os.PathLike,
    *,
    input_shape: tuple[int, int, int] = (160, 160, 3),
    keep_probability: float = 0.8,
) -> InceptionResnetV1:
    """Builds ``inception_resnet_v1`` holding the weights of a facenet (TF1) model.

    Args:
        path: a checkpoint prefix (``.../model-20180402-114759.ckpt-275``), the model directory
            holding it, or the frozen graph (``.../20180402-114759.pb``). Only the
            ``InceptionResnetV1/...`` variables are read: the classifier (``Logits``), center-loss
            centres, optimizer slots and moving-average shadows are ignored.
        input_shape: model input (H, W, 3), >= 75.
        keep_probability: dropout keep probability used when fine-tuning.

    Returns:
        The Keras model, ``bn_scale=False`` (slim BatchNorm has no gamma) unless the checkpoint
        holds ``BatchNorm/gamma`` variables; ``embedding_size`` (128 for the 2017 models, 512
        for 2018) is read from ``InceptionResnetV1/Bottleneck/weights``.
    """
    fetch = _tf1_tensors(path)
    bottleneck = np.asarray(fetch(f"{SLIM_ROOT}/Bottleneck/weights"))
    try:
        fetch(f"{SLIM_ROOT}/Conv2d_1a_3x3/BatchNorm/gamma")
        bn_scale = True
    except KeyError:
        bn_scale = False
    model = InceptionResnetV1(
        input_shape=input_shape,
        embedding_size=int(bottleneck.shape[1]),
        keep_probability=keep_probability,
        bn_scale=bn_scale,
    )
    _assign(model, "slim", fetch)
    return model


def facenet_pytorch_model_class() -> type:
    """facenet-pytorch's ``InceptionResnetV1`` class, for parity tests and benchmarks.

    Loads only ``facenet_pytorch/models/inception_resnet_v1.py`` (needs torch, requests and
    tqdm), not the package ``__init__``: that one imports the MTCNN code, hence torchvision,
    which pulls in ``torch._dynamo`` and triton, and importing triton after TensorFlow crashes
    the process (torch 2.14 CUDA wheels). Raises ImportError when facenet-pytorch or torch is
    not installed.
    """
    import importlib.util
    import sys
    import types

    loaded = sys.modules.get("facenet_pytorch")
    if hasattr(loaded, "InceptionResnetV1"):  # already imported normally by the caller
        return loaded.InceptionResnetV1
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet-pytorch is not installed")
    root = list(spec.submodule_search_locations)[0]
    # Bare package modules stand in for facenet_pytorch and facenet_pytorch.models so that the
    # file's relative import (.utils.download) resolves without running their __init__.
    packages = {
        "facenet_pytorch": root,
        "facenet_pytorch.models": os.path.join(root, "models"),
        "facenet_pytorch.models.utils": os.path.join(root, "models", "utils"),
    }
    added = [name for name in packages if name not in sys.modules]
    for name in added:
        package = types.ModuleType(name)
        package.__path__ = [packages[name]]
        sys.modules[name] = package
    name = "facenet_pytorch.models.inception_resnet_v1"
    try:
        file_spec = importlib.util.spec_from_file_location(name, os.path.join(root, "models", "inception_resnet_v1.py"))
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    finally:
        for stale in [*added, name, "facenet_pytorch.models.utils.download"]:
            sys.modules.pop(stale, None)
    return module.InceptionResnetV1

"""SphereFace's and SeqFace's Caffe models -> tfface embedders, exactly (``--format caffe``).

* ``sphereface20`` / ``36`` / ``64`` (wy1iu/sphereface ``sphereface_model.caffemodel``, MIT):
  112x96 faces aligned to SphereFace's 5-point template, BGR, ``(x - 127.5) / 128``.
* ``seqface_resnet27`` / ``seqface_resnet64`` (huangyangyu/SeqFace ``train.caffemodel`` +
  ``mean.binaryproto``, research only): faces cut by SeqFace's eye/mouth crop, resized to
  144x144, centre-cropped to the net's input, BGR, minus the mean image, times 0.0078125.

The file's layers up to ``fc5`` (the features both evaluate) must be, in order, the layers of
tfface's reconstruction (same names and types; convolution and pooling geometry where the file
states it), and every weight blob must have the expected shape; the first difference is
refused in one line. Layers after ``fc5`` (the training classifier and losses) are ignored.
BGR is folded into the first convolution (its input channels reversed), the mean image is
converted to RGB: both exact, so the embedder takes RGB pixels like every tfface model.
"""
from __future__ import annotations

import os

import cv2
import keras
import numpy as np
from keras import layers

from tfface import models
from tfface.core.errors import UserError
from tfface.core.preprocessing import MeanImage, Standardize
from tfface.importers.caffe_proto import CaffeNet, read_blob, read_net
from tfface.importers.registry import Imported, file_sha256, register_format
from tfface.models.sphereface import SPHEREFACE_UNITS

FORMAT = "caffe"
SPHEREFACE_ARCHS = tuple(f"sphereface{depth}" for depth in SPHEREFACE_UNITS)
SEQFACE_ARCHS = ("seqface_resnet27", "seqface_resnet64")
LICENCES = {
    "sphereface": "MIT (wy1iu/sphereface)",
    "seqface": "research only: non-commercial use (huangyangyu/SeqFace README; its MIT licence covers the code, not the model)",
}
SEQFACE_RESIZE = (144, 144)  # SeqFace's evaluation resizes every face to this before the centre crop
SEQFACE_SCALE = 0.0078125
# Layers that move or name data without computing on it (Caffe inserts Split layers itself).
_PASS_THROUGH = {"Split", "Silence", "Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData"}


def _expected_layers(backbone: keras.Model) -> list[tuple[str, str, keras.Layer]]:
    """(Caffe type, Caffe name, Keras layer) of every computing layer of the backbone, in order."""
    kinds = {layers.Conv2D: "Convolution", layers.PReLU: "PReLU", layers.Add: "Eltwise",
             layers.MaxPooling2D: "Pooling", layers.Dense: "InnerProduct"}
    expected = []
    for layer in backbone.layers:
        kind = next((name for cls, name in kinds.items() if isinstance(layer, cls)), None)
        if kind:
            expected.append((kind, "fc5" if layer.name == "embedding" else layer.name, layer))
    return expected


def _conv_geometry(params) -> tuple[int, int, int]:
    """(kernel, stride, pad) a ConvolutionParameter/PoolingParameter states: each an int when
    equal in height and width, else (h, w); unset ones take Caffe's defaults."""
    def one(repeated, h, w, default):  # ``repeated``: a repeated (convolution) or scalar (pooling) field
        values = list(repeated) if hasattr(repeated, "__len__") else ([repeated] if repeated else [])
        if params.HasField(h) or params.HasField(w):
            values = [getattr(params, h), getattr(params, w)]
        values = values or [default]
        return values[0] if len(set(values)) == 1 else tuple(values)

    return (one(params.kernel_size, "kernel_h", "kernel_w", 0), one(params.stride, "stride_h", "stride_w", 1),
            one(params.pad, "pad_h", "pad_w", 0))


def _keras_geometry(backbone: keras.Model, layer: keras.Layer) -> tuple[int, int, int]:
    if isinstance(layer, layers.MaxPooling2D):
        return layer.pool_size[0], layer.strides[0], 0
    pad_name = f"{layer.name}_pad"
    pad = backbone.get_layer(pad_name).padding[0][0] if pad_name in [x.name for x in backbone.layers] else (
        (layer.kernel_size[0] - 1) // 2 if layer.padding == "same" else 0)
    return layer.kernel_size[0], layer.strides[0], pad


def _check_topology(net: CaffeNet, backbone: keras.Model, path: str, arch: str) -> None:
    """Refuses, naming the first difference, a file whose layers up to fc5 are not the backbone's."""
    found = [layer for layer in net.layers if layer.type not in _PASS_THROUGH]
    names = [layer.name for layer in found]
    if "fc5" not in names:
        raise UserError(f"--import: '{path}' has no layer 'fc5' (the features of {arch}); it is another network")
    found = found[:names.index("fc5") + 1]
    for i, (kind, name, keras_layer) in enumerate(_expected_layers(backbone)):
        layer = found[i] if i < len(found) else None
        # the V1 enum has no PReLU: a fork's own number ("V1:<n>") stands for it
        type_ok = layer is not None and (layer.type == kind or (kind == "PReLU" and layer.type.startswith("V1:")))
        if layer is None or layer.name != name or not type_ok:
            got = f"{layer.type} '{layer.name}'" if layer else "nothing"
            raise UserError(f"--import: '{path}' layer {i + 1} is {got}, {arch} expects {kind} '{name}'")
        if kind in ("Convolution", "Pooling") and layer.params is not None:
            stated, ours = _conv_geometry(layer.params), _keras_geometry(backbone, keras_layer)
            if kind == "Pooling" and (layer.params.pool != 0 or layer.params.global_pooling):
                raise UserError(f"--import: '{path}' layer '{name}' is not a max pooling, {arch} expects one")
            if stated != ours:
                raise UserError(f"--import: '{path}' layer '{name}' has (kernel, stride, pad) {stated}, {arch} expects {ours}")
        if kind == "Eltwise" and layer.params is not None and (layer.params.operation != 1 or len(layer.params.coeff)):
            raise UserError(f"--import: '{path}' layer '{name}' is not a plain sum (Eltwise operation "
                            f"{layer.params.operation}, coeff {list(layer.params.coeff)})")
    if len(found) != len(_expected_layers(backbone)):
        extra = found[len(_expected_layers(backbone))]
        raise UserError(f"--import: '{path}' has an extra layer {extra.type} '{extra.name}' before fc5 ({arch})")


def _blob(net: CaffeNet, name: str, index: int, shape: tuple[int, ...], path: str) -> np.ndarray:
    """Blob ``index`` of layer ``name``, of ``shape`` (a legacy 4-D shape with leading ones fits)."""
    blobs = net.by_name[name].blobs
    if index >= len(blobs):
        raise UserError(f"--import: '{path}' layer '{name}' has {len(blobs)} blobs, expected {index + 1} or more")
    value = blobs[index]
    squeezed = value.reshape(value.shape[value.ndim - len(shape):]) if (
        value.ndim > len(shape) and all(d == 1 for d in value.shape[:value.ndim - len(shape)])) else value
    if squeezed.shape != tuple(shape):
        raise UserError(f"--import: '{path}' layer '{name}' blob {index} has shape {list(value.shape)}, expected {list(shape)}")
    return squeezed


def _assign(net: CaffeNet, backbone: keras.Model, path: str) -> None:
    """Copies every blob into the backbone (Caffe layouts -> Keras), checking names and shapes."""
    final_map = backbone.get_layer("flatten").input.shape[1:]  # (H, W, C) flattened by Caffe as (C, H, W)
    for kind, name, layer in _expected_layers(backbone):
        if kind == "Convolution":
            kh, kw, cin, cout = layer.kernel.shape
            values = [_blob(net, name, 0, (cout, cin, kh, kw), path).transpose(2, 3, 1, 0)]
            if layer.use_bias:
                values.append(_blob(net, name, 1, (cout,), path))
            elif len(net.by_name[name].blobs) > 1:
                raise UserError(f"--import: '{path}' layer '{name}' has a bias, {backbone.name} expects none")
        elif kind == "PReLU":
            channels = layer.alpha.shape[-1]
            values = [_blob(net, name, 0, (channels,), path).reshape(layer.alpha.shape)]
        elif kind == "InnerProduct":
            fan_in, out = layer.kernel.shape
            weights = _blob(net, name, 0, (out, fan_in), path)
            chw = weights.reshape(out, final_map[2], final_map[0], final_map[1])
            values = [chw.transpose(2, 3, 1, 0).reshape(fan_in, out), _blob(net, name, 1, (out,), path)]
        else:
            continue
        layer.set_weights(values)


def _input_size(net: CaffeNet, arch: str, path: str) -> tuple[int, int]:
    """(H, W) of the net's input: as the file declares it, else the architecture's default."""
    if net.input_shape is None:
        return models.default_input_shape(arch)[:2]
    if len(net.input_shape) != 4 or net.input_shape[1] != 3:
        raise UserError(f"--import: '{path}' declares input {list(net.input_shape)}, expected (N, 3, H, W)")
    return int(net.input_shape[2]), int(net.input_shape[3])


def detect_arch(net: CaffeNet, path: str) -> str:
    """The backbone a file holds: ``seqface_resnet27`` (``conv1a``) or ``sphereface<depth>``
    (``conv1_1``, depth from its residual units). SphereFace-64 and SeqFace ResNet-64 share a
    layout: the latter is picked with ``--arch seqface_resnet64``."""
    if "conv1a" in net.by_name:
        return "seqface_resnet27"
    if "conv1_1" in net.by_name:
        convs = [layer.name for layer in net.layers if layer.type == "Convolution"]
        units = tuple(sum(1 for name in convs if name.startswith(f"conv{stage}_") and name != f"conv{stage}_1") // 2
                      for stage in range(1, 5))
        for depth, expected in SPHEREFACE_UNITS.items():
            if units == expected:
                return f"sphereface{depth}"
    raise UserError(f"--import: cannot tell the architecture of '{path}'; pass --arch, one of "
                    f"{list(SPHEREFACE_ARCHS + SEQFACE_ARCHS)}")


def read_mean(path: str, size: tuple[int, int]) -> np.ndarray:
    """SeqFace's ``mean.binaryproto`` (1 or no leading dim, 3 BGR channels, H, W) as an RGB (H, W, 3)
    image of the net's input ``size``; resized bilinearly (half-pixel centres) when it is another
    size, as SeqFace's Featurer resizes it."""
    mean = read_blob(path, "--mean")
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3 or mean.shape[0] != 3 or min(mean.shape) < 1:
        raise UserError(f"--mean: '{path}' holds a blob of shape {list(mean.shape)}, expected (1, 3, H, W) "
                        f"(a BGR mean image)")
    rgb = np.ascontiguousarray(mean.transpose(1, 2, 0)[..., ::-1])
    if rgb.shape[:2] != tuple(size):
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return rgb.astype(np.float32)


def _seqface_embedder(net_model: keras.Model, arch: str, mean_rgb: np.ndarray) -> keras.Model:
    """pixels (144, 144) -> x / 128 -> centre crop -> minus mean / 128 -> the net: SeqFace's input contract."""
    height, width = net_model.input_shape[1:3]
    top, left = int(SEQFACE_RESIZE[0] / 2 - height / 2), int(SEQFACE_RESIZE[1] / 2 - width / 2)
    faces = keras.Input((*SEQFACE_RESIZE, 3), name="images")
    x = layers.Cropping2D(((top, SEQFACE_RESIZE[0] - top - height), (left, SEQFACE_RESIZE[1] - left - width)),
                          name="center_crop")(faces)
    mean = MeanImage(mean_rgb.shape, name="mean_image")
    x = net_model(mean(x))
    mean.set_weights([mean_rgb * SEQFACE_SCALE])
    backbone = keras.Model(faces, x, name=arch)
    pixels = keras.Input((*SEQFACE_RESIZE, 3), name="pixels")
    return keras.Model(pixels, backbone(Standardize("scale_1_128", name="standardize")(pixels)), name=f"{arch}_embedder")


def import_caffe(path: str, arch: str | None = None, mean: str | None = None) -> Imported:
    """Imports a SphereFace or SeqFace ``.caffemodel`` (V1 or V2 layers) as a tfface embedder.

    Args:
        path: the ``.caffemodel``.
        arch: one of ``SPHEREFACE_ARCHS + SEQFACE_ARCHS``; None tells it from the file.
        mean: SeqFace's ``mean.binaryproto`` (required for SeqFace, refused otherwise).
    """
    net = read_net(path)
    arch = arch or detect_arch(net, path)
    if arch not in SPHEREFACE_ARCHS + SEQFACE_ARCHS:
        raise UserError(f"--arch: expected one of {list(SPHEREFACE_ARCHS + SEQFACE_ARCHS)} for a Caffe model, got {arch!r}")
    seqface = arch in SEQFACE_ARCHS
    if seqface and not mean:
        raise UserError(f"--mean: required for {arch} (SeqFace's mean.binaryproto)")
    if mean and not seqface:
        raise UserError(f"--mean: only SeqFace models subtract a mean image, not {arch}")
    size = _input_size(net, arch, path)
    mean_rgb = read_mean(mean, size) if seqface else None
    if "fc5" not in net.by_name or not net.by_name["fc5"].blobs:
        raise UserError(f"--import: '{path}' has no layer 'fc5' with weights (the features of {arch}); it is another network")
    first_unit = "conv2_1" if arch == "seqface_resnet27" else "conv1_2"
    frozen = first_unit in net.by_name and len(net.by_name[first_unit].blobs) == 1
    embedding_size = int(net.by_name["fc5"].blobs[0].shape[-2]) if net.by_name["fc5"].blobs[0].ndim >= 2 else 0
    try:
        backbone = models.get_backbone(arch, input_shape=(*size, 3), embedding_size=embedding_size,
                                       frozen_unit_biases=frozen)
    except ValueError as err:
        raise UserError(f"--import: '{path}' cannot be built as {arch} ({err})") from None
    _check_topology(net, backbone, path, arch)
    _assign(net, backbone, path)
    first = _expected_layers(backbone)[0][2]
    kernel, *rest = first.get_weights()
    first.set_weights([kernel[:, :, ::-1, :], *rest])  # BGR input -> RGB input
    source = {"format": FORMAT, "file": os.path.basename(path), "sha256": file_sha256(path), "arch": arch,
              "caffe_layers": net.version, "licence": LICENCES["seqface" if seqface else "sphereface"]}
    if seqface:
        embedder = _seqface_embedder(backbone, arch, mean_rgb)
        source["mean"] = {"file": os.path.basename(mean), "sha256": file_sha256(mean)}
        source["input"] = (f"BGR; resized to {SEQFACE_RESIZE[0]}x{SEQFACE_RESIZE[1]}, centre crop {size[0]}x{size[1]}, "
                           f"minus the mean image, times {SEQFACE_SCALE}")
        alignment = {"align": "seqface", "image_size": list(SEQFACE_RESIZE), "margin": 0.0}
    else:
        pixels = keras.Input((*size, 3), name="pixels")
        embedder = keras.Model(pixels, backbone(Standardize("fixed_image_standardization", name="standardize")(pixels)),
                               name=f"{arch}_embedder")
        source["input"] = f"BGR; {size[0]}x{size[1]} faces on SphereFace's 5-point template; (x - 127.5) / 128"
        alignment = {"align": "sphereface", "image_size": list(size), "margin": 0.0}
    return Imported(embedder, alignment, source)


def _load(path: str, arch: str | None, options: dict) -> Imported:
    unknown = sorted(set(options) - {"mean"})
    if unknown:
        raise UserError(f"--import: options {unknown} do not apply to Caffe models")
    return import_caffe(path, arch, options.get("mean") or None)


register_format(FORMAT, _load, (".caffemodel",))

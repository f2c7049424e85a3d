"""The InsightFace family's networks as weight plans, shared by the ``.pth``, ONNX and MXNet importers.

A *plan* lists every weight-carrying unit of a network in execution order as ``Unit(layer, key,
kind)``: the tfface Keras layer, the PyTorch state-dict prefix of its tensors (arcface_torch's keys
for ``iresnet*``, InsightFace_Pytorch / MultiFace keys for ``ir_*`` / ``ir_se_*`` /
``mobilefacenet``) and its kind (``conv``, ``bn``, ``prelu``, ``dense``). Every importer turns its
file into one dict of PyTorch-named tensors in PyTorch layout; :func:`build` checks each tensor's
name and shape against the plan, converts the layouts (OIHW -> HWIO, (C,1,k,k) -> (k,k,C,1),
Linear rows C,H,W -> H,W,C) and returns the :class:`~tfface.importers.registry.Imported` embedder.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterator, Mapping, NamedTuple

import keras
import numpy as np

from tfface import models
from tfface.core.errors import UserError
from tfface.importers.registry import Imported, file_sha256
from tfface.models.insightface_ir import IR_UNITS
from tfface.models.iresnet import IRESNET_UNITS

LICENCE_ZOO = ("InsightFace pretrained models (arcface_torch, model zoo, MXNet): non-commercial research use only "
               "(deepinsight/insightface model_zoo/README.md); the weights are read from the user's file, never shipped")
LICENCE_MULTIFACE = ("InsightFace_Pytorch / MultiFace weights: code MIT, trained on MS1M (research use); read from the "
                     "user's file, never shipped")
#: The parameter tensors of one unit of each kind, PyTorch names.
SUFFIXES = {"conv": ("weight",), "bn": ("weight", "bias", "running_mean", "running_var"), "prelu": ("weight",),
            "dense": ("weight", "bias")}


class Unit(NamedTuple):
    layer: str  # tfface Keras layer name
    key: str  # PyTorch state-dict prefix
    kind: str  # conv | bn | prelu | dense


def _iresnet_plan(depth: int) -> Iterator[Unit]:
    yield from (Unit("conv1", "conv1", "conv"), Unit("bn1", "bn1", "bn"), Unit("prelu", "prelu", "prelu"))
    for stage, units in enumerate(IRESNET_UNITS[depth], start=1):
        for u in range(units):
            layer, key = f"layer{stage}_{u}", f"layer{stage}.{u}"
            for part, kind in (("bn1", "bn"), ("conv1", "conv"), ("bn2", "bn"), ("prelu", "prelu"), ("conv2", "conv"),
                               ("bn3", "bn")):
                yield Unit(f"{layer}_{part}", f"{key}.{part}", kind)
            if u == 0:
                yield Unit(f"{layer}_downsample_0", f"{key}.downsample.0", "conv")
                yield Unit(f"{layer}_downsample_1", f"{key}.downsample.1", "bn")
    yield from (Unit("bn2", "bn2", "bn"), Unit("fc", "fc", "dense"), Unit("features", "features", "bn"))


def _ir_plan(depth: int, se: bool) -> Iterator[Unit]:
    yield from (Unit("input_conv", "input_layer.0", "conv"), Unit("input_bn", "input_layer.1", "bn"),
                Unit("input_prelu", "input_layer.2", "prelu"))
    n = 0
    for stage, units in enumerate(IR_UNITS[depth], start=1):
        for u in range(units):
            layer, key = f"stage{stage}_unit{u + 1}", f"body.{n}"
            if stage > 1 and u == 0:  # the width changes: conv1x1 + BN shortcut, run first
                yield Unit(f"{layer}_shortcut_conv", f"{key}.shortcut_layer.0", "conv")
                yield Unit(f"{layer}_shortcut_bn", f"{key}.shortcut_layer.1", "bn")
            for part, index, kind in (("bn1", 0, "bn"), ("conv1", 1, "conv"), ("prelu", 2, "prelu"),
                                      ("conv2", 3, "conv"), ("bn2", 4, "bn")):
                yield Unit(f"{layer}_{part}", f"{key}.res_layer.{index}", kind)
            if se:
                yield Unit(f"{layer}_se_fc1", f"{key}.res_layer.5.fc1", "conv")
                yield Unit(f"{layer}_se_fc2", f"{key}.res_layer.5.fc2", "conv")
            n += 1
    yield from (Unit("output_bn", "output_layer.0", "bn"), Unit("fc", "output_layer.3", "dense"),
                Unit("embedding", "output_layer.4", "bn"))


def _mobilefacenet_plan() -> Iterator[Unit]:
    def conv_block(layer, key, conv="conv", prelu=True):
        yield Unit(f"{layer}_{conv}", f"{key}.conv", "conv")
        yield Unit(f"{layer}_bn", f"{key}.bn", "bn")
        if prelu:
            yield Unit(f"{layer}_prelu", f"{key}.prelu", "prelu")

    def depth_wise(layer, key):
        yield from conv_block(f"{layer}_expand", f"{key}.conv")
        yield from conv_block(f"{layer}_depthwise", f"{key}.conv_dw", conv="dw")
        yield from conv_block(f"{layer}_project", f"{key}.project", prelu=False)

    yield from conv_block("conv1", "conv1")
    yield from conv_block("conv2", "conv2_dw", conv="dw")
    for layer, key, blocks in (("conv23", "conv_23", 0), ("conv3", "conv_3", 4), ("conv34", "conv_34", 0),
                               ("conv4", "conv_4", 6), ("conv45", "conv_45", 0), ("conv5", "conv_5", 2)):
        if blocks:
            for i in range(blocks):
                yield from depth_wise(f"{layer}_{i}", f"{key}.model.{i}")
        else:
            yield from depth_wise(layer, key)
    yield from conv_block("conv6_sep", "conv_6_sep")
    yield from (Unit("gdc_dw", "conv_6_dw.conv", "conv"), Unit("gdc_bn", "conv_6_dw.bn", "bn"),
                Unit("linear", "linear", "dense"), Unit("embedding", "bn", "bn"))


#: Every architecture the importers map: tfface backbone name -> its plan.
PLANS: dict[str, Callable[[], Iterator[Unit]]] = {
    **{f"iresnet{d}": (lambda d=d: _iresnet_plan(d)) for d in IRESNET_UNITS},
    **{f"ir_{d}": (lambda d=d: _ir_plan(d, False)) for d in IR_UNITS if f"ir_{d}" in models.list_backbones()},
    **{f"ir_se_{d}": (lambda d=d: _ir_plan(d, True)) for d in IR_UNITS if f"ir_se_{d}" in models.list_backbones()},
    "mobilefacenet": _mobilefacenet_plan,
}


def plan(arch: str) -> list[Unit]:
    """The plan of ``arch``, or a one-line error listing the architectures mapped."""
    if arch not in PLANS:
        raise UserError(f"--arch: expected one of {sorted(PLANS)}, got {arch!r}")
    return list(PLANS[arch]())


def source_keys(arch: str) -> list[str]:
    """Every PyTorch tensor name of ``arch``'s state dict, in plan order."""
    keys = []
    for unit in plan(arch):
        suffixes = SUFFIXES[unit.kind]
        if unit.kind == "dense" and arch == "mobilefacenet":
            suffixes = ("weight",)  # MobileFaceNet's Linear has no bias
        keys += [f"{unit.key}.{s}" for s in suffixes]
    return keys


def arch_from_keys(keys) -> str | None:
    """The architecture a state dict's tensor names belong to (None when none fits)."""
    keys = set(keys)
    if "layer1.0.bn1.weight" in keys:
        units = tuple(len({m.group(2) for k in keys if (m := re.match(rf"layer({s})\.(\d+)\.", k))}) for s in "1234")
        return next((f"iresnet{d}" for d, u in IRESNET_UNITS.items() if u == units), None)
    if "body.0.res_layer.0.weight" in keys:
        count = len({k.split(".")[1] for k in keys if k.startswith("body.")})
        se = any(".res_layer.5.fc1." in k for k in keys)
        depth = next((d for d, u in IR_UNITS.items() if sum(u) == count), None)
        name = f"ir_{'se_' if se else ''}{depth}"
        return name if name in PLANS else None
    if "conv_23.conv.conv.weight" in keys:
        return "mobilefacenet"
    return None


def _torch_shape(layer: keras.Layer, kind: str, suffix: str) -> tuple[int, ...]:
    """The PyTorch shape of tensor ``suffix`` of ``layer``."""
    if kind == "conv":
        kh, kw, cin, cout = layer.kernel.shape
        return (cin, 1, kh, kw) if isinstance(layer, keras.layers.DepthwiseConv2D) else (cout, cin, kh, kw)
    if kind == "dense":
        cin, cout = layer.kernel.shape
        return (cout, cin) if suffix == "weight" else (cout,)
    if kind == "prelu":
        return (layer.alpha.shape[-1],)
    return (layer.moving_mean.shape[0],)


def _keras_values(layer: keras.Layer, kind: str, t: dict[str, np.ndarray], flatten_chw) -> list[np.ndarray]:
    """The unit's tensors ``t`` (PyTorch layout) as ``layer.get_weights()``."""
    if kind == "conv":
        perm = (2, 3, 0, 1) if isinstance(layer, keras.layers.DepthwiseConv2D) else (2, 3, 1, 0)
        return [t["weight"].transpose(perm)]
    if kind == "prelu":
        return [t["weight"].reshape(layer.alpha.shape)]
    if kind == "bn":
        return [t["weight"], t["bias"], t["running_mean"], t["running_var"]]
    kernel = t["weight"]
    if flatten_chw is not None:  # rows of PyTorch's C,H,W flatten -> Keras' H,W,C
        c, h, w = flatten_chw
        kernel = kernel.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(kernel.shape[0], -1)
    return [kernel.T] + ([t["bias"]] if "bias" in t else [])


def assign(backbone: keras.Model, arch: str, tensors: Mapping[str, np.ndarray], where: str,
           names: Mapping[str, str] | None = None) -> None:
    """Sets every weight of ``backbone`` (an ``arch``) from PyTorch-named ``tensors``.

    Raises a one-line :class:`UserError` naming ``where`` and the first missing or mis-shaped
    tensor (by its name in the file: ``names`` maps PyTorch names to the file's own) or the
    first tensor the network has no place for.
    """
    names = names or {}
    expected = set(check_names(arch, tensors, where, names))
    flatten = backbone.get_layer("flatten").input.shape[1:]
    flatten_chw = (flatten[2], flatten[0], flatten[1]) if len(flatten) == 3 and flatten[0] * flatten[1] > 1 else None
    for unit in plan(arch):
        layer = backbone.get_layer(unit.layer)
        unit_tensors = {}
        for suffix in SUFFIXES[unit.kind]:
            key = f"{unit.key}.{suffix}"
            if key not in expected:
                continue
            value = np.asarray(tensors[key], dtype=np.float32)
            shape = _torch_shape(layer, unit.kind, suffix)
            if value.shape != shape:
                raise UserError(f"{where}: tensor '{names.get(key, key)}' has shape {tuple(value.shape)}, "
                                f"{arch} expects {shape}")
            unit_tensors[suffix] = value
        layer.set_weights(_keras_values(layer, unit.kind, unit_tensors, flatten_chw if unit.kind == "dense" else None))


def check_names(arch: str, tensors: Mapping[str, np.ndarray], where: str, names: Mapping[str, str]) -> list[str]:
    """``arch``'s tensor names, after checking that ``tensors`` has exactly those (one-line error
    naming the first missing one, or the first one the network has no place for)."""
    expected = source_keys(arch)
    missing = next((k for k in expected if k not in tensors), None)
    if missing:
        raise UserError(f"{where}: tensor '{names.get(missing, missing)}' of {arch} is missing")
    known = set(expected)
    extra = next((k for k in tensors if k not in known), None)
    if extra:
        raise UserError(f"{where}: tensor '{names.get(extra, extra)}' has no place in {arch}")
    return expected


def build(path: str, fmt: str, arch: str, tensors: Mapping[str, np.ndarray], *, standardization: str,
          channel_order: str = "RGB", names: Mapping[str, str] | None = None, **source) -> Imported:
    """The imported embedder of ``arch`` (112x112, arcface-aligned faces, pixels -> embeddings).

    ``channel_order`` is the order the weights were trained on: ``"BGR"`` flips the first
    convolution's input channels (exact: every channel is standardised alike), so the embedder
    takes RGB like every tfface model. ``source`` adds format-specific provenance.
    """
    from tfface.export.sources import make_alignment  # tfface.export imports the importers

    where = f"--import '{path}'"
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be RGB or BGR, got {channel_order!r}")
    first = f"{plan(arch)[0].key}.weight"
    if channel_order == "BGR" and first in tensors and np.ndim(tensors[first]) == 4:
        tensors = {**tensors, first: np.asarray(tensors[first])[:, ::-1]}
    check_names(arch, tensors, where, names or {})  # before the (slow) build
    embedder = models.build_embedder(arch, (112, 112), 512, standardization)
    assign(embedder.layers[-1], arch, tensors, where, names)
    licence = LICENCE_ZOO if arch.startswith("iresnet") or fmt != "pth" else LICENCE_MULTIFACE
    provenance = {"format": fmt, "file": os.path.basename(path), "sha256": file_sha256(path), "arch": arch,
                  "licence": licence, "standardization": standardization, "channel_order": channel_order,
                  "input_channel_order": "RGB", **source}
    return Imported(embedder, make_alignment("arcface", (112, 112)), provenance)

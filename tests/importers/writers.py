"""Weight files in the InsightFace family's real formats, written from the PyTorch reference nets of
``torch_nets``: ONNX graphs built with ``onnx.helper`` (the zoo's torch.onnx topology, BN-folded or
not, with or without MXNet's Sub/Mul preamble) and MXNet ``fresnet`` ``-symbol.json`` + ``.params``
in MXNet's binary layout. Each returns what its independent runtime needs to check parity."""
from __future__ import annotations

import json
import struct

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from tests.importers.torch_nets import IResNet


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        self.n += 1
        name = name or f"onnx::{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.n += 1
        out = f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self.n}", **attrs))
        return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def _bn(g: _Graph, x: str, bn: torch.nn.BatchNorm2d | torch.nn.BatchNorm1d, key: str) -> str:
    names = [g.const(_np(getattr(bn, a)), f"{key}.{a}") for a in ("weight", "bias", "running_mean", "running_var")]
    return g.op("BatchNormalization", [x, *names], epsilon=bn.eps)


def _conv(g: _Graph, x: str, conv: torch.nn.Conv2d, bn, key: str, folded: bool) -> str:
    """Conv (+ the BN after it, folded into the conv's weight and bias when ``folded``)."""
    attrs = dict(kernel_shape=list(conv.kernel_size), strides=list(conv.stride), pads=list(conv.padding) * 2,
                 group=conv.groups)
    if not folded:
        return _bn(g, g.op("Conv", [x, g.const(_np(conv.weight), f"{key}.weight")], **attrs), bn, f"{key}_bn")
    scale = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps)
    weight = _np(conv.weight) * scale[:, None, None, None]
    bias = _np(bn.bias) - _np(bn.running_mean) * scale
    return g.op("Conv", [x, g.const(weight), g.const(bias)], **attrs)


def write_onnx(net: IResNet, path: str, folded: bool, preamble: bool = False, extra_op: str | None = None) -> None:
    """arcface_torch's IResNet as torch.onnx exports it (input ``data``, N x 3 x 112 x 112)."""
    g = _Graph()
    x = "data"
    if preamble:  # MXNet conversions: (x - 127.5) * 0.0078125 inside the graph
        x = g.op("Mul", [g.op("Sub", [x, g.const(np.float32(127.5))]), g.const(np.float32(0.0078125))])
    x = _conv(g, x, net.conv1, net.bn1, "conv1", folded)
    x = g.op("PRelu", [x, g.const(_np(net.prelu.weight).reshape(-1, 1, 1), "prelu.weight")])
    if extra_op:
        x = g.op(extra_op, [x])
    for s in range(1, 5):
        for u, block in enumerate(getattr(net, f"layer{s}")):
            key = f"layer{s}.{u}"
            y = _bn(g, x, block.bn1, f"{key}.bn1")
            y = _conv(g, y, block.conv1, block.bn2, f"{key}.conv1", folded)
            y = g.op("PRelu", [y, g.const(_np(block.prelu.weight).reshape(-1, 1, 1), f"{key}.prelu.weight")])
            y = _conv(g, y, block.conv2, block.bn3, f"{key}.conv2", folded)
            shortcut = x
            if block.downsample is not None:
                shortcut = _conv(g, x, block.downsample[0], block.downsample[1], f"{key}.downsample", folded)
            x = g.op("Add", [y, shortcut])
    x = g.op("Flatten", [_bn(g, x, net.bn2, "bn2")], axis=1)
    x = g.op("Gemm", [x, g.const(_np(net.fc.weight), "fc.weight"), g.const(_np(net.fc.bias), "fc.bias")], transB=1)
    x = _bn(g, x, net.features, "features")
    graph = helper.make_graph(
        g.nodes, "iresnet", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, 112, 112])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [None, 512])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


# --- MXNet fresnet -------------------------------------------------------------------------------------

MX_EPS = 2e-5


def _params_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """MXNet's NDArray list layout (V2 arrays, dense, CPU, float32)."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for value in arrays.values():
        value = np.ascontiguousarray(value, np.float32)
        out.append(struct.pack("<IiI", 0xF993FAC9, 0, value.ndim) + struct.pack(f"<{value.ndim}q", *value.shape))
        out.append(struct.pack("<iii", 1, 0, 0) + value.tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        out.append(struct.pack("<Q", len(name.encode())) + name.encode())
    return b"".join(out)


class _Symbol:
    def __init__(self):
        self.nodes = [{"op": "null", "name": "data", "inputs": []}]

    def add(self, op: str, name: str, inputs: list[int], params: tuple[str, ...] = (), **attrs) -> int:
        ids = list(inputs)
        for p in params:
            self.nodes.append({"op": "null", "name": f"{name}_{p}", "inputs": []})
            ids.append(len(self.nodes) - 1)
        self.nodes.append({"op": op, "name": name, "attrs": {k: str(v) for k, v in attrs.items()},
                           "inputs": [[i, 0, 0] for i in ids]})
        return len(self.nodes) - 1


def write_mxnet(net: IResNet, prefix: str, junk_fc1_gamma: bool = True) -> str:
    """``prefix-symbol.json`` + ``prefix-0000.params`` of ``net`` as fresnet names it (``net``'s
    BNs must have eps 2e-5; fc1 is fix_gamma, its stored gamma junk when ``junk_fc1_gamma``).
    Returns the .params path."""
    sym, arrays = _Symbol(), {}
    bn_params, conv_params = ("gamma", "beta", "moving_mean", "moving_var"), ("weight",)

    def bn(x, module, name, fix_gamma=False):
        arrays.update({f"arg:{name}_gamma": _np(module.weight), f"arg:{name}_beta": _np(module.bias),
                       f"aux:{name}_moving_mean": _np(module.running_mean),
                       f"aux:{name}_moving_var": _np(module.running_var)})
        return sym.add("BatchNormalization", name, [x], bn_params, eps=MX_EPS, fix_gamma=fix_gamma, momentum=0.9)

    def conv(x, module, name):
        arrays[f"arg:{name}_weight"] = _np(module.weight)
        return sym.add("Convolution", name, [x], conv_params, kernel=tuple(module.kernel_size),
                       stride=tuple(module.stride), pad=tuple(module.padding), num_filter=module.out_channels,
                       no_bias=True)

    def prelu(x, module, name):
        arrays[f"arg:{name}_gamma"] = _np(module.weight)
        return sym.add("LeakyReLU", name, [x], ("gamma",), act_type="prelu")

    x = sym.add("_mul_scalar", "_mulscalar0", [sym.add("_minus_scalar", "_minusscalar0", [0], scalar=127.5)],
                scalar=0.0078125)
    x = prelu(bn(conv(x, net.conv1, "conv0"), net.bn1, "bn0"), net.prelu, "relu0")
    for s in range(1, 5):
        for u, block in enumerate(getattr(net, f"layer{s}")):
            name = f"stage{s}_unit{u + 1}"
            y = bn(x, block.bn1, f"{name}_bn1")
            y = prelu(bn(conv(y, block.conv1, f"{name}_conv1"), block.bn2, f"{name}_bn2"), block.prelu, f"{name}_relu1")
            y = bn(conv(y, block.conv2, f"{name}_conv2"), block.bn3, f"{name}_bn3")
            shortcut = x
            if block.downsample is not None:
                shortcut = bn(conv(x, block.downsample[0], f"{name}_conv1sc"), block.downsample[1], f"{name}_sc")
            x = sym.add("elemwise_add", f"_plus{s}_{u}", [y, shortcut])
    x = sym.add("Dropout", "dropout0", [bn(x, net.bn2, "bn1")], p=0.4)
    arrays.update({"arg:pre_fc1_weight": _np(net.fc.weight), "arg:pre_fc1_bias": _np(net.fc.bias)})
    x = sym.add("FullyConnected", "pre_fc1", [x], ("weight", "bias"), num_hidden=512)
    x = bn(x, net.features, "fc1", fix_gamma=True)
    if junk_fc1_gamma:
        arrays["arg:fc1_gamma"] = np.random.default_rng(5).uniform(0.5, 2.0, 512).astype(np.float32)
    with open(f"{prefix}-symbol.json", "w") as f:
        json.dump({"nodes": sym.nodes, "arg_nodes": [i for i, n in enumerate(sym.nodes) if n["op"] == "null"],
                   "heads": [[x, 0, 0]], "attrs": {"mxnet_version": ["int", 10600]}}, f)
    path = f"{prefix}-0000.params"
    with open(path, "wb") as f:
        f.write(_params_bytes(arrays))
    return path

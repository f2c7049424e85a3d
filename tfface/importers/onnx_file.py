"""ONNX files of the InsightFace family -> tfface embedders (format ``onnx``; the ``onnx`` package).

The model zoo's ``w600k_r50.onnx`` / ``glintr100.onnx`` (buffalo_l, antelopev2) are arcface_torch
IResNets exported by ``torch.onnx``: conv + BN pairs are usually folded into one Conv with a bias,
the pre-convolution BNs stay BatchNormalization nodes. Both forms are read: the graph's weight
nodes (Conv, BatchNormalization, PRelu, Gemm / MatMul + Add), in graph order, are matched unit by
unit against the architecture's plan (:mod:`tfface.importers.insightface`); a folded Conv maps onto
the convolution plus an identity BN (gamma 1, beta = bias, mean 0, variance 1 - eps). The
architecture is told from the graph (``--arch`` may name it). The input normalisation is read from
the graph: a Sub/Mul (or Div) preamble on the input (MXNet conversions, ``(x - 127.5) * 0.0078125``)
or none (arcface_torch exports: ``(x - 127.5) / 127.5`` applied outside). Ops that tfface does not
map are named in the error.
"""
from __future__ import annotations

import numpy as np

from tfface.core.errors import UserError
from tfface.importers import insightface
from tfface.importers.registry import Imported, register_format

_WEIGHT_OPS = {"Conv", "BatchNormalization", "PRelu", "Gemm", "MatMul"}
#: Ops without weights that the plans' networks contain (activations, the SE gate, residual
#: adds, 1x1 max-pool shortcuts, flatten in its exported spellings, inference no-ops).
_PLAIN_OPS = {"Add", "Relu", "Sigmoid", "Mul", "Sub", "Div", "GlobalAveragePool", "ReduceMean", "MaxPool", "Flatten",
              "Reshape", "Shape", "Gather", "Unsqueeze", "Concat", "Squeeze", "Dropout", "Identity", "Constant", "Cast"}
_EPS = 1e-5  # every BN of the mapped networks
_NORMALISATIONS = {"minus_one_to_one": (1 / 127.5, -1.0), "fixed_image_standardization": (1 / 128, -127.5 / 128)}


class _Graph:
    """The parts of an ONNX graph the importer reads: constants, producers, consumers."""

    def __init__(self, model):
        from onnx import numpy_helper

        graph = model.graph
        self.nodes = list(graph.node)
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value.t)
        inputs = [i.name for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise ValueError(f"expected one image input, found {inputs}")
        self.input = inputs[0]
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def const(self, node, index: int) -> np.ndarray | None:
        if index >= len(node.input) or node.input[index] not in self.constants:
            return None
        return np.asarray(self.constants[node.input[index]], np.float32)


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _normalisation(g: _Graph) -> tuple[str, list]:
    """(standardization name, preamble nodes) from the affine Sub/Mul/Div/Add chain on the input."""
    scale, shift, tensor, preamble = 1.0, 0.0, g.input, []
    while len(g.consumers.get(tensor, [])) == 1:
        node = g.consumers[tensor][0]
        other = [i for i in node.input if i != tensor]
        if node.op_type not in ("Sub", "Mul", "Div", "Add") or len(other) != 1 or other[0] not in g.constants:
            break
        c = np.asarray(g.constants[other[0]], np.float64)
        if c.size != 1 or (node.op_type == "Sub" and node.input[0] != tensor):
            break
        c = float(c.reshape(()))
        scale, shift = {"Sub": (scale, shift - c), "Add": (scale, shift + c), "Mul": (scale * c, shift * c),
                        "Div": (scale / c, shift / c)}[node.op_type]
        preamble.append(node)
        tensor = node.output[0]
    if not preamble:
        return "minus_one_to_one", preamble  # the zoo's mean/std 127.5, outside the graph
    for name, (a, b) in _NORMALISATIONS.items():
        if abs(scale - a) <= 1e-6 * a and abs(shift - b) <= 1e-5:
            return name, preamble
    raise ValueError(f"its input preamble computes {scale:.6g} * x + {shift:.6g}, not a known normalisation")


def _weight_nodes(g: _Graph, preamble) -> list:
    """The weight-carrying nodes in graph order; unmapped ops refused by name."""
    skip = {id(n) for n in preamble}
    unmapped = sorted({n.op_type for n in g.nodes if n.op_type not in _WEIGHT_OPS | _PLAIN_OPS})
    if unmapped:
        first = next(n for n in g.nodes if n.op_type in unmapped)
        raise ValueError(f"ONNX op(s) tfface does not map: {', '.join(unmapped)} (first: node '{first.name}')")
    return [n for n in g.nodes if n.op_type in _WEIGHT_OPS and id(n) not in skip]


def _identity_bn(bias: np.ndarray) -> dict[str, np.ndarray]:
    ones = np.ones_like(bias)
    return {"weight": ones, "bias": bias, "running_mean": np.zeros_like(bias), "running_var": ones - _EPS}


def _dense(g: _Graph, node) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight (out, in), bias) of a Gemm, or of a MatMul and the Add after it."""
    if node.op_type == "Gemm":
        if _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0 or _attr(node, "transA", 0):
            raise ValueError(f"Gemm node '{node.name}' has alpha/beta/transA the plan does not map")
        w = g.const(node, 1)
        return (w if _attr(node, "transB", 0) else w.T), g.const(node, 2)
    w = g.const(node, 1)
    adds = [n for n in g.consumers.get(node.output[0], []) if n.op_type == "Add"]
    bias = next((b for n in adds for b in (g.const(n, 0), g.const(n, 1)) if b is not None), None)
    return w.T, bias


def match(g: _Graph, nodes: list, arch: str) -> dict[str, np.ndarray]:
    """PyTorch-named tensors of ``arch`` from the weight nodes, or a ValueError naming the first misfit."""
    units = insightface.plan(arch)
    tensors: dict[str, np.ndarray] = {}
    i = 0
    for k, unit in enumerate(units):
        if f"{unit.key}.weight" in tensors:  # already set by a folded conv / dense
            continue
        if i >= len(nodes):
            raise ValueError(f"the graph ends before {arch}'s '{unit.key}' ({unit.kind})")
        node, i = nodes[i], i + 1
        want = {"conv": ("Conv",), "bn": ("BatchNormalization",), "prelu": ("PRelu",), "dense": ("Gemm", "MatMul")}
        if node.op_type not in want[unit.kind]:
            raise ValueError(f"node '{node.name}' is a {node.op_type}, {arch} has a {unit.kind} ('{unit.key}') there")
        if unit.kind == "bn":
            scale, bias, mean, var = (g.const(node, j) for j in range(1, 5))
            var = var + (float(_attr(node, "epsilon", 1e-5)) - _EPS)
            tensors.update({f"{unit.key}.weight": scale, f"{unit.key}.bias": bias,
                            f"{unit.key}.running_mean": mean, f"{unit.key}.running_var": var})
            continue
        if unit.kind == "prelu":
            tensors[f"{unit.key}.weight"] = g.const(node, 1).reshape(-1)
            continue
        weight, bias = (g.const(node, 1), g.const(node, 2)) if unit.kind == "conv" else _dense(g, node)
        if weight is None:
            raise ValueError(f"node '{node.name}' has no constant weight")
        tensors[f"{unit.key}.weight"] = weight
        if bias is None:
            continue
        if unit.kind == "dense" and f"{unit.key}.bias" in insightface.source_keys(arch):
            tensors[f"{unit.key}.bias"] = bias
        elif k + 1 < len(units) and units[k + 1].kind == "bn":  # conv/dense + BN folded into one node
            tensors.update({f"{units[k + 1].key}.{s}": v for s, v in _identity_bn(bias).items()})
        else:
            raise ValueError(f"node '{node.name}' has a bias, {arch}'s '{unit.key}' has none")
    if i < len(nodes):
        raise ValueError(f"node '{nodes[i].name}' ({nodes[i].op_type}) has no place in {arch}")
    return tensors


def load(path: str, arch: str | None, options: dict) -> Imported:
    """The ``onnx`` format's loader (see the module docstring)."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        raise UserError("--import: reading .onnx files needs the onnx package (pip install 'tfface[onnx]')") from None
    if arch is not None:
        insightface.plan(arch)  # an unknown --arch is refused first
    try:
        g = _Graph(onnx.load(path))
        standardization, preamble = _normalisation(g)
        nodes = _weight_nodes(g, preamble)
        if arch is None:
            arch = _tell_arch(g, nodes)
        tensors = match(g, nodes, arch)
    except UserError:
        raise
    except (ValueError, TypeError, KeyError, OSError, DecodeError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UserError(f"--import '{path}': {first}") from None
    return insightface.build(path, "onnx", arch, tensors, standardization=standardization, preamble=bool(preamble))


def _tell_arch(g: _Graph, nodes: list) -> str:
    """The first architecture whose plan the graph's weight nodes fit, else the misfit of the closest."""
    errors = {}
    for arch in insightface.PLANS:
        try:
            match(g, nodes, arch)
            return arch
        except ValueError as err:
            errors[arch] = str(err)
    counts = {a: len(insightface.plan(a)) for a in errors}
    closest = min(errors, key=lambda a: abs(counts[a] - len(nodes)))
    raise UserError(f"the graph fits none of {sorted(insightface.PLANS)} (closest, {closest}: {errors[closest]})")


register_format("onnx", load, (".onnx",))

"""MXNet ``model-symbol.json`` + ``model-0000.params`` of InsightFace's ``fresnet`` -> ``iresnet*``
(format ``mxnet``), read in NumPy: no MXNet.

``fresnet``'s ``residual_unit_v3`` is arcface_torch's block (BN -> conv3x3 -> BN -> PReLU ->
conv3x3/stride -> BN, conv1x1 + BN shortcut ``conv1sc``/``sc`` in the first unit of each stage).
Every BN takes its epsilon from the symbol (fresnet: 2e-5), folded exactly into the moving
variance of tfface's eps-1e-5 BN; a BN with ``fix_gamma`` (fresnet's output ``fc1``) gets gamma 1,
whatever the file stores. The symbol's input preamble (``(x - 127.5) * 0.0078125``) gives the
standardization. The symbol file is ``<prefix>-symbol.json`` beside ``<prefix>-NNNN.params``.

``.params`` layout (MXNet ``NDArray::Save``, as netron's ``mxnet.js`` reads it): uint64 list magic
0x112, uint64 reserved, uint64 count, then per array uint32 magic 0xF993FAC9 (V2; 0xF993FAC8 V1
has no storage type), int32 storage type (0 = dense), uint32 ndim, int64 dims, int32 device type
and id, int32 type flag (0 float32, 1 float64, 2 float16), the data; then uint64 count and the
names, each uint64 length + bytes (``arg:``/``aux:`` prefixes).
"""
from __future__ import annotations

import json
import os
import re
import struct

import numpy as np

from tfface.core.errors import UserError
from tfface.importers import insightface
from tfface.importers.registry import Imported, file_sha256, register_format
from tfface.models.iresnet import IRESNET_UNITS

LIST_MAGIC = 0x112
ARRAY_MAGIC_V1, ARRAY_MAGIC_V2 = 0xF993FAC8, 0xF993FAC9
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}
_EPS = 1e-5  # tfface's BN epsilon


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated at byte {self.pos} (needs {n} more, has {len(self.data) - self.pos})")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def read_params(path: str) -> dict[str, np.ndarray]:
    """The named arrays of an MXNet ``.params`` file (dense ones; names keep ``arg:``/``aux:``)."""
    with open(path, "rb") as f:
        r = _Reader(f.read())
    magic, _ = r.unpack("<QQ")
    if magic != LIST_MAGIC:
        raise ValueError(f"not an MXNet .params file (magic {magic:#x}, expected {LIST_MAGIC:#x})")
    (count,) = r.unpack("<Q")
    arrays = []
    for _ in range(count):
        (magic,) = r.unpack("<I")
        if magic not in (ARRAY_MAGIC_V1, ARRAY_MAGIC_V2):
            raise ValueError(f"array {len(arrays)}: unknown NDArray magic {magic:#x}")
        if magic == ARRAY_MAGIC_V2:
            (stype,) = r.unpack("<i")
            if stype != 0:
                raise ValueError(f"array {len(arrays)}: sparse storage type {stype} is not a weight tensor")
        (ndim,) = r.unpack("<I")
        shape = r.unpack(f"<{ndim}q")
        if ndim == 0:
            arrays.append(np.zeros((0,), np.float32))
            continue
        r.unpack("<ii")  # device type and id
        (flag,) = r.unpack("<i")
        if flag not in DTYPES:
            raise ValueError(f"array {len(arrays)}: unknown type flag {flag}")
        dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
        size = int(np.prod(shape))
        arrays.append(np.frombuffer(r.take(size * dtype.itemsize), dtype).reshape(shape))
    (count,) = r.unpack("<Q")
    if count != len(arrays):
        raise ValueError(f"{len(arrays)} arrays but {count} names")
    names = []
    for _ in range(count):
        (length,) = r.unpack("<Q")
        names.append(bytes(r.take(length)).decode())
    return dict(zip(names, arrays))


def symbol_path(params_path: str) -> str:
    """``<prefix>-symbol.json`` for ``<prefix>-NNNN.params``."""
    prefix = re.sub(r"-\d+\.params$", "", params_path)
    return f"{prefix}-symbol.json"


def _read_symbol(path: str) -> dict[str, dict]:
    """Op nodes of a symbol file by name: {"op", "attrs", "inputs"} (inputs as node names)."""
    with open(path) as f:
        nodes = json.load(f)["nodes"]
    return {n["name"]: {"op": n["op"], "attrs": n.get("attrs", n.get("attr", n.get("param", {}))) or {},
                        "inputs": [nodes[i[0]]["name"] for i in n.get("inputs", [])]}
            for n in nodes}


def _standardization(symbol: dict[str, dict]) -> str:
    """The input preamble: ``_minus_scalar`` 127.5 then ``_mul_scalar`` 0.0078125 (fresnet)."""
    ops = [(n["op"], float(n["attrs"].get("scalar", "nan"))) for n in symbol.values() if n["op"].endswith("_scalar")]
    if ("_minus_scalar", 127.5) in ops and ("_mul_scalar", 0.0078125) in ops:
        return "fixed_image_standardization"
    raise ValueError(f"its input preamble {ops or 'is missing'}; fresnet's is (x - 127.5) * 0.0078125")


def _mx_names(depth: int) -> dict[str, str]:
    """arcface_torch tensor name -> MXNet parameter name, for ``iresnet{depth}``."""
    prefixes = {"conv1": "conv0", "bn1": "bn0", "prelu": "relu0", "bn2": "bn1", "fc": "pre_fc1", "features": "fc1"}
    for stage, units in enumerate(IRESNET_UNITS[depth], start=1):
        for u in range(units):
            mx = f"stage{stage}_unit{u + 1}"
            for torch_part, mx_part in (("bn1", "bn1"), ("conv1", "conv1"), ("bn2", "bn2"), ("prelu", "relu1"),
                                        ("conv2", "conv2"), ("bn3", "bn3"), ("downsample.0", "conv1sc"),
                                        ("downsample.1", "sc")):
                prefixes[f"layer{stage}.{u}.{torch_part}"] = f"{mx}_{mx_part}"
    suffix = {"weight": "weight", "bias": "bias", "running_mean": "moving_mean", "running_var": "moving_var"}
    names = {}
    for unit in insightface.plan(f"iresnet{depth}"):
        mx = prefixes[unit.key]
        for s in insightface.SUFFIXES[unit.kind]:
            if unit.kind == "bn":
                names[f"{unit.key}.{s}"] = f"{'aux' if s.startswith('running') else 'arg'}:{mx}_" + (
                    {"weight": "gamma", "bias": "beta"}.get(s) or suffix[s])
            elif unit.kind == "prelu":
                names[f"{unit.key}.{s}"] = f"arg:{mx}_gamma"
            else:
                names[f"{unit.key}.{s}"] = f"arg:{mx}_{suffix[s]}"
    return names


def load(path: str, arch: str | None, options: dict) -> Imported:
    """The ``mxnet`` format's loader (see the module docstring)."""
    symbol_file = options.get("symbol") or symbol_path(path)
    if not os.path.isfile(symbol_file):
        raise UserError(f"--import '{path}': its symbol file '{symbol_file}' does not exist")
    try:
        params = read_params(path)
        symbol = _read_symbol(symbol_file)
        standardization = _standardization(symbol)
    except (ValueError, KeyError, IndexError, TypeError, OSError, UnicodeDecodeError) as err:
        raise UserError(f"--import '{path}': {str(err).splitlines()[0][:300]}") from None
    units = tuple(len({m.group(2) for k in params if (m := re.match(rf"arg:stage({s})_unit(\d+)_", k))}) for s in "1234")
    found = next((f"iresnet{d}" for d, u in IRESNET_UNITS.items() if u == units), None)
    arch = arch or found
    if arch is None:
        raise UserError(f"--import '{path}': units per stage {units} are those of no fresnet "
                        f"({ {f'iresnet{d}': u for d, u in IRESNET_UNITS.items()} }); pass --arch")
    if arch not in insightface.PLANS or not arch.startswith("iresnet"):
        raise UserError(f"--arch: MXNet fresnet files map onto iresnet18/34/50/100/200, got {arch!r}")
    names = _mx_names(int(arch.removeprefix("iresnet")))
    by_mx = {mx: key for key, mx in names.items()}
    tensors = {}
    for mx, value in params.items():
        key = by_mx.get(mx, mx)
        if mx.startswith("arg:fc7_"):
            continue  # the training head (class centres), not part of the embedder
        tensors[key] = np.asarray(value, np.float32)
    for name, node in symbol.items():
        if node["op"] != "BatchNormalization":
            continue
        key = next((k[: -len(".running_var")] for k, mx in names.items() if mx == f"aux:{name}_moving_var"), None)
        if key is None or f"{key}.running_var" not in tensors:
            continue  # a missing tensor is named by insightface.assign
        eps = float(node["attrs"].get("eps", "0.001"))  # MXNet's default
        tensors[f"{key}.running_var"] = tensors[f"{key}.running_var"] + (eps - _EPS)
        if node["attrs"].get("fix_gamma", "True").lower() in ("true", "1"):  # MXNet's default: fixed
            tensors[f"{key}.weight"] = np.ones_like(tensors[f"{key}.running_var"])
    return insightface.build(path, "mxnet", arch, tensors, standardization=standardization, names=names,
                             symbol=os.path.basename(symbol_file), symbol_sha256=file_sha256(symbol_file))


register_format("mxnet", load, (".params",))

"""PyTorch state dicts (``.pth``) of the InsightFace family -> tfface embedders (format ``pth``).

The architecture is told from the tensor names (``--arch`` may confirm it): arcface_torch's
``backbone.pth`` (``layer1.0.bn1.weight`` ...) -> ``iresnet18/34/50/100/200``, RGB, (x - 127.5) /
127.5; InsightFace_Pytorch / MultiFace ``model_ir_se50.pth`` / ``model_mobilefacenet.pth``
(``body.0.res_layer.0.weight`` ... / ``conv_23.conv.conv.weight`` ...) -> ``ir_se_50`` (``ir_50``,
``ir_100``, ``ir_se_100``) / ``mobilefacenet``, trained on BGR with (x - 127.5) / 127.5: the first
convolution's input channels are flipped so that the embedder takes RGB.

The file is read with ``torch.load(weights_only=True)`` when torch is installed, else by
:func:`read_zip_state_dict`, which understands torch's zip format and builds nothing but
tensors: a pickle that names any other callable is refused before anything runs.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from tfface.core.errors import UserError
from tfface.importers import insightface
from tfface.importers.registry import Imported, register_format

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64, "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    """A storage of a torch zip file: its element type and key (read when a tensor is built)."""

    def __init__(self, dtype, key: str):
        self.dtype, self.key = dtype, key


def _rebuild_tensor(storage, offset, size, stride, *_):
    return storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_parameter(data, *_):
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a state dict: OrderedDicts and tensor records only; any other global is refused."""

    _ALLOWED = {("collections", "OrderedDict"): OrderedDict, ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' (only tensors are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        return _Storage(_STORAGE_DTYPES[pid[1]], str(pid[2]))


def _as_array(record, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> np.ndarray:
    storage, offset, size, stride = record
    raw = archive.read(f"{prefix}data/{storage.key}")
    if storage.dtype == "bfloat16":  # numpy has no bfloat16: widen to float32 bit patterns
        data = (np.frombuffer(raw, f"{byteorder}u2").astype(np.uint32) << 16).view(np.float32)
    else:
        data = np.frombuffer(raw, np.dtype(storage.dtype).newbyteorder(byteorder))
    itemsize = data.dtype.itemsize
    if size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= data.size:
        raise ValueError(f"storage {storage.key} is shorter than its tensor")
    return np.lib.stride_tricks.as_strided(data[offset:], size, [s * itemsize for s in stride]).copy()


def read_zip_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save`` zip file (PyTorch >= 1.6), without torch and without
    running any code the file might name."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError("not a torch zip file (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        byteorder = archive.read(f"{prefix}byteorder").decode().strip() if f"{prefix}byteorder" in names else "little"
        order = "<" if byteorder == "little" else ">"
        obj = _TensorOnlyUnpickler(io.BytesIO(archive.read(pickles[0]))).load()
        if not isinstance(obj, dict):
            raise ValueError(f"holds a {type(obj).__name__}, not a state dict")
        return {k: _as_array(v, archive, prefix, order) for k, v in _flatten(obj).items()}


def _flatten(obj: dict) -> dict:
    """The state dict inside ``obj`` (``{"state_dict": ...}`` wrappers and ``module.`` prefixes removed)."""
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """``path``'s tensors as float arrays by name (``num_batches_tracked`` counters dropped)."""
    try:
        import torch
    except ImportError:
        torch = None
    try:
        if torch is not None:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise ValueError(f"holds a {type(obj).__name__}, not a state dict")
            tensors = {k: v.detach().float().numpy() for k, v in _flatten(obj).items() if isinstance(v, torch.Tensor)}
        else:
            tensors = read_zip_state_dict(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, ValueError, RuntimeError, EOFError, KeyError, OSError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"--import '{path}': not a readable PyTorch state dict ({first})") from None
    return {k: np.asarray(v, np.float32) for k, v in tensors.items() if not k.endswith("num_batches_tracked")}


def load(path: str, arch: str | None, options: dict) -> Imported:
    """The ``pth`` format's loader (see the module docstring)."""
    tensors = read_state_dict(path)
    found = insightface.arch_from_keys(tensors)
    arch = arch or found
    if arch is None:
        raise UserError(f"--import '{path}': the tensor names ({next(iter(tensors), 'none')}, ...) are not those of an "
                        f"InsightFace network; expected one of {sorted(insightface.PLANS)}")
    insightface.plan(arch)  # an unknown --arch is refused before the tensors are matched
    bgr = not arch.startswith("iresnet")  # InsightFace_Pytorch / MultiFace trained on BGR images
    return insightface.build(path, "pth", arch, tensors, standardization="minus_one_to_one",
                             channel_order="BGR" if bgr else "RGB",
                             family="arcface_torch" if arch.startswith("iresnet") else "InsightFace_Pytorch")


register_format("pth", load, (".pth",))

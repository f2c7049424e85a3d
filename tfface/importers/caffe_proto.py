"""Caffe's files read without Caffe: ``.caffemodel`` (``NetParameter``) and ``.binaryproto``
(``BlobProto``, e.g. a mean image), parsed by the protobuf runtime TensorFlow brings.

The message classes are built at run time from a descriptor holding the subset of
``caffe.proto`` an importer needs (field numbers as in BVLC Caffe; forks such as SphereFace's
and SeqFace's keep them). Fields not declared here are skipped by the parser. ``BlobProto``'s
packed ``data`` / ``double_data`` are declared as bytes (the wire format of a packed run), so a
blob's values are read with one ``numpy.frombuffer``. Both layer
forms are read: ``layer`` (V2, type a string) and the deprecated ``layers`` (V1, type an enum,
named here as V2 names it). Nothing is executed: a file is data only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from tfface.core.errors import UserError

_PACKAGE = "tfface_caffe"
_F = descriptor_pb2.FieldDescriptorProto

# message -> [(name, number, type, label, message type or None, packed)]
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_MESSAGES: dict[str, list[tuple]] = {
    "BlobShape": [("dim", 1, _F.TYPE_INT64, _REPEATED, None, True)],
    "BlobProto": [
        ("num", 1, _F.TYPE_INT32, _OPTIONAL, None, False),
        ("channels", 2, _F.TYPE_INT32, _OPTIONAL, None, False),
        ("height", 3, _F.TYPE_INT32, _OPTIONAL, None, False),
        ("width", 4, _F.TYPE_INT32, _OPTIONAL, None, False),
        # packed repeated float / double: read as the raw bytes of each packed run (fast)
        ("data", 5, _F.TYPE_BYTES, _REPEATED, None, False),
        ("shape", 7, _F.TYPE_MESSAGE, _OPTIONAL, "BlobShape", False),
        ("double_data", 8, _F.TYPE_BYTES, _REPEATED, None, False),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("bias_term", 2, _F.TYPE_BOOL, _OPTIONAL, None, False),
        ("pad", 3, _F.TYPE_UINT32, _REPEATED, None, False),
        ("kernel_size", 4, _F.TYPE_UINT32, _REPEATED, None, False),
        ("group", 5, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("stride", 6, _F.TYPE_UINT32, _REPEATED, None, False),
        ("pad_h", 9, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("pad_w", 10, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("kernel_h", 11, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("kernel_w", 12, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("stride_h", 13, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("stride_w", 14, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("dilation", 18, _F.TYPE_UINT32, _REPEATED, None, False),
    ],
    "PoolingParameter": [
        ("pool", 1, _F.TYPE_INT32, _OPTIONAL, None, False),  # enum: MAX = 0, AVE = 1, STOCHASTIC = 2
        ("kernel_size", 2, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("stride", 3, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("pad", 4, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("kernel_h", 5, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("kernel_w", 6, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("stride_h", 7, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("stride_w", 8, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("pad_h", 9, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("pad_w", 10, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("global_pooling", 12, _F.TYPE_BOOL, _OPTIONAL, None, False),
    ],
    "InnerProductParameter": [
        ("num_output", 1, _F.TYPE_UINT32, _OPTIONAL, None, False),
        ("bias_term", 2, _F.TYPE_BOOL, _OPTIONAL, None, False),
        ("axis", 5, _F.TYPE_INT32, _OPTIONAL, None, False),
        ("transpose", 6, _F.TYPE_BOOL, _OPTIONAL, None, False),
    ],
    "EltwiseParameter": [
        ("operation", 1, _F.TYPE_INT32, _OPTIONAL, None, False),  # enum: PROD = 0, SUM = 1, MAX = 2
        ("coeff", 2, _F.TYPE_FLOAT, _REPEATED, None, False),
    ],
    "PReLUParameter": [("channel_shared", 2, _F.TYPE_BOOL, _OPTIONAL, None, False)],
    "InputParameter": [("shape", 1, _F.TYPE_MESSAGE, _REPEATED, "BlobShape", False)],
    "LayerParameter": [
        ("name", 1, _F.TYPE_STRING, _OPTIONAL, None, False),
        ("type", 2, _F.TYPE_STRING, _OPTIONAL, None, False),
        ("bottom", 3, _F.TYPE_STRING, _REPEATED, None, False),
        ("top", 4, _F.TYPE_STRING, _REPEATED, None, False),
        ("blobs", 7, _F.TYPE_MESSAGE, _REPEATED, "BlobProto", False),
        ("convolution_param", 106, _F.TYPE_MESSAGE, _OPTIONAL, "ConvolutionParameter", False),
        ("eltwise_param", 110, _F.TYPE_MESSAGE, _OPTIONAL, "EltwiseParameter", False),
        ("inner_product_param", 117, _F.TYPE_MESSAGE, _OPTIONAL, "InnerProductParameter", False),
        ("pooling_param", 121, _F.TYPE_MESSAGE, _OPTIONAL, "PoolingParameter", False),
        ("prelu_param", 131, _F.TYPE_MESSAGE, _OPTIONAL, "PReLUParameter", False),
        ("input_param", 143, _F.TYPE_MESSAGE, _OPTIONAL, "InputParameter", False),
    ],
    "V1LayerParameter": [
        ("bottom", 2, _F.TYPE_STRING, _REPEATED, None, False),
        ("top", 3, _F.TYPE_STRING, _REPEATED, None, False),
        ("name", 4, _F.TYPE_STRING, _OPTIONAL, None, False),
        ("type", 5, _F.TYPE_INT32, _OPTIONAL, None, False),  # enum LayerType, read as a number
        ("blobs", 6, _F.TYPE_MESSAGE, _REPEATED, "BlobProto", False),
        ("convolution_param", 10, _F.TYPE_MESSAGE, _OPTIONAL, "ConvolutionParameter", False),
        ("inner_product_param", 17, _F.TYPE_MESSAGE, _OPTIONAL, "InnerProductParameter", False),
        ("pooling_param", 19, _F.TYPE_MESSAGE, _OPTIONAL, "PoolingParameter", False),
        ("eltwise_param", 24, _F.TYPE_MESSAGE, _OPTIONAL, "EltwiseParameter", False),
    ],
    "NetParameter": [
        ("name", 1, _F.TYPE_STRING, _OPTIONAL, None, False),
        ("layers", 2, _F.TYPE_MESSAGE, _REPEATED, "V1LayerParameter", False),
        ("input", 3, _F.TYPE_STRING, _REPEATED, None, False),
        ("input_dim", 4, _F.TYPE_INT32, _REPEATED, None, False),
        ("input_shape", 8, _F.TYPE_MESSAGE, _REPEATED, "BlobShape", False),
        ("layer", 100, _F.TYPE_MESSAGE, _REPEATED, "LayerParameter", False),
    ],
}

#: V1 ``LayerType`` enum values -> the V2 type string (caffe.proto, ``V1LayerParameter``). The
#: V1 enum has no PReLU: forks that stored PReLU layers in V1 files used numbers of their own,
#: which are reported as ``"V1:<number>"``.
V1_TYPES = {
    0: "None", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat", 37: "ContrastiveLoss",
    4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout", 32: "DummyData", 7: "EuclideanLoss",
    25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 29: "MemoryData",
    16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling", 26: "Power", 18: "ReLU", 19: "Sigmoid",
    27: "SigmoidCrossEntropyLoss", 36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split",
    33: "Slice", 23: "TanH", 24: "WindowData", 31: "Threshold",
}


@lru_cache(maxsize=None)
def message_class(name: str) -> type:
    """The run-time protobuf class of Caffe message ``name`` (e.g. ``"NetParameter"``)."""
    proto = descriptor_pb2.FileDescriptorProto(name="tfface_caffe.proto", package=_PACKAGE, syntax="proto2")
    for msg_name, fields in _MESSAGES.items():
        msg = proto.message_type.add(name=msg_name)
        for field_name, number, ftype, label, type_name, packed in fields:
            f = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


@dataclass
class CaffeLayer:
    """One layer of a Caffe net: V2 type name, connections, weight blobs and its parameters
    message (``convolution_param``, ``pooling_param``, ... or None when the file has none)."""

    name: str
    type: str
    bottom: list[str]
    top: list[str]
    blobs: list[np.ndarray]
    params: message.Message | None = None


@dataclass
class CaffeNet:
    """A parsed ``.caffemodel``: its name, layers in file order, the declared input shape
    (N, C, H, W) when the file states one, and ``"V1"``/``"V2"``."""

    name: str
    layers: list[CaffeLayer]
    input_shape: tuple[int, ...] | None
    version: str
    by_name: dict[str, CaffeLayer] = field(init=False)

    def __post_init__(self):
        self.by_name = {layer.name: layer for layer in self.layers}


def blob_array(blob, what: str) -> np.ndarray:
    """A ``BlobProto`` as a float32 array of its shape (``shape``, else the legacy 4-D
    num/channels/height/width); refuses a blob whose value count does not match its shape."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if any(len(run) % 4 for run in blob.data) or any(len(run) % 8 for run in blob.double_data):
        raise UserError(f"{what}: blob data is not a whole number of values")
    if len(blob.data):
        values = np.frombuffer(b"".join(blob.data), "<f4")
    else:
        values = np.frombuffer(b"".join(blob.double_data), "<f8")
    if values.size != int(np.prod(shape)) or min(shape, default=1) < 0:
        raise UserError(f"{what}: blob holds {values.size} values, its shape {list(shape)} needs {int(np.prod(shape))}")
    return values.astype(np.float32).reshape(shape)


def _parse(cls_name: str, path: str, what: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UserError(f"{what}: cannot read '{path}' ({err.strerror})") from None
    msg = message_class(cls_name)()
    try:
        msg.ParseFromString(data)
    except message.DecodeError as err:
        raise UserError(f"{what}: '{path}' is not a Caffe {cls_name} (truncated or another format: {err})") from None
    return msg


def _params(layer) -> message.Message | None:
    for name in ("convolution_param", "pooling_param", "inner_product_param", "eltwise_param", "prelu_param", "input_param"):
        if name in layer.DESCRIPTOR.fields_by_name and layer.HasField(name):
            return getattr(layer, name)
    return None


def _input_shape(net) -> tuple[int, ...] | None:
    if len(net.input_shape):
        return tuple(int(d) for d in net.input_shape[0].dim)
    if len(net.input_dim) >= 4:
        return tuple(int(d) for d in net.input_dim[:4])
    for layer in net.layer:
        if layer.type == "Input" and layer.HasField("input_param") and len(layer.input_param.shape):
            return tuple(int(d) for d in layer.input_param.shape[0].dim)
    return None


def read_net(path: str, what: str = "--import") -> CaffeNet:
    """Parses a ``.caffemodel`` (or a binary deploy net) into a :class:`CaffeNet`.

    Raises:
        UserError: unreadable or truncated file, no layers, both layer forms in one file, or a
            blob whose values do not fill its shape.
    """
    net = _parse("NetParameter", path, what)
    if len(net.layer) and len(net.layers):
        raise UserError(f"{what}: '{path}' has both V2 'layer' and V1 'layers' fields (Caffe refuses such nets)")
    v1 = bool(len(net.layers))
    layers = []
    for layer in (net.layers if v1 else net.layer):
        kind = V1_TYPES.get(layer.type, f"V1:{layer.type}") if v1 else layer.type
        blobs = [blob_array(blob, f"{what}: '{path}' layer '{layer.name}' blob {i}") for i, blob in enumerate(layer.blobs)]
        layers.append(CaffeLayer(layer.name, kind, list(layer.bottom), list(layer.top), blobs, _params(layer)))
    if not layers:
        raise UserError(f"{what}: '{path}' holds no layers (not a Caffe model, or an empty one)")
    return CaffeNet(net.name, layers, _input_shape(net), "V1" if v1 else "V2")


def read_blob(path: str, what: str = "--mean") -> np.ndarray:
    """Parses a ``.binaryproto`` ``BlobProto`` (e.g. ``mean.binaryproto``) into a float32 array."""
    if not os.path.isfile(path):
        raise UserError(f"{what}: file '{path}' does not exist")
    blob = _parse("BlobProto", path, what)
    return blob_array(blob, f"{what}: '{path}'")

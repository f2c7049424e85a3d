"""Caffe files for the importer tests, written independently of tfface: the nets described as
deploy prototxts would (from the published architectures), a protobuf wire encoder of the
caffe.proto fields they use, and a PyTorch forward pass that runs the description.

Architectures: SphereFace-20 as wy1iu/sphereface ``train/code/sphereface_deploy.prototxt``;
ResNet-27 of Wen et al. (center loss, ydwen/caffe-face ``face_example/face_deploy.prototxt``), the
network SeqFace's ResNet-27 uses.
"""
from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------- protobuf wire encoding
VARINT, LEN = 0, 2


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def varint_field(number: int, value: int) -> bytes:
    return _key(number, VARINT) + _varint(value)


def bytes_field(number: int, payload: bytes) -> bytes:
    return _key(number, LEN) + _varint(len(payload)) + payload


def string_field(number: int, text: str) -> bytes:
    return bytes_field(number, text.encode())


def blob(array: np.ndarray, legacy: bool = False) -> bytes:
    """A BlobProto: shape (field 7, BlobShape.dim = 1 packed int64) or legacy num/channels/
    height/width (1..4, left-padded with ones), data packed little-endian float32 (field 5)."""
    array = np.asarray(array, np.float32)
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(varint_field(n, d) for n, d in zip((1, 2, 3, 4), dims))
    else:
        head = bytes_field(7, bytes_field(1, b"".join(_varint(d) for d in array.shape)))
    return head + bytes_field(5, array.astype("<f4").tobytes())


# ------------------------------------------------------------------- the nets, as deploy files
def _conv(name, bottom, num_output, kernel, stride, pad):
    return {"name": name, "type": "Convolution", "bottom": [bottom], "top": [name],
            "conv": (num_output, kernel, stride, pad)}


def _prelu(name, blob_name):
    return {"name": name, "type": "PReLU", "bottom": [blob_name], "top": [blob_name]}


def _units(stage, first, count, bottom, channels):
    """``count`` residual units: conv, PReLU, conv, PReLU, Eltwise sum with the unit's input."""
    layers = []
    for unit in range(count):
        a, b = first + 2 * unit, first + 2 * unit + 1
        layers += [_conv(f"conv{stage}_{a}", bottom, channels, 3, 1, 1), _prelu(f"relu{stage}_{a}", f"conv{stage}_{a}"),
                   _conv(f"conv{stage}_{b}", f"conv{stage}_{a}", channels, 3, 1, 1), _prelu(f"relu{stage}_{b}", f"conv{stage}_{b}"),
                   {"name": f"res{stage}_{b}", "type": "Eltwise", "bottom": [bottom, f"conv{stage}_{b}"], "top": [f"res{stage}_{b}"]}]
        bottom = f"res{stage}_{b}"
    return layers, bottom


def sphereface20() -> list[dict]:
    layers, bottom = [], "data"
    for stage, (channels, units) in enumerate(zip((64, 128, 256, 512), (1, 2, 4, 1)), start=1):
        layers += [_conv(f"conv{stage}_1", bottom, channels, 3, 2, 1), _prelu(f"relu{stage}_1", f"conv{stage}_1")]
        more, bottom = _units(stage, 2, units, f"conv{stage}_1", channels)
        layers += more
    return layers + [{"name": "fc5", "type": "InnerProduct", "bottom": [bottom], "top": ["fc5"], "fc": 512}]


def resnet27() -> list[dict]:
    layers = [_conv("conv1a", "data", 32, 3, 1, 0), _prelu("relu1a", "conv1a")]
    bottom, widen = "conv1a", "1b"
    for stage, (channels, units) in enumerate(zip((64, 128, 256, 512), (1, 2, 5, 3)), start=2):
        layers += [_conv(f"conv{widen}", bottom, channels, 3, 1, 0), _prelu(f"relu{widen}", f"conv{widen}"),
                   {"name": f"pool{widen}", "type": "Pooling", "bottom": [f"conv{widen}"], "top": [f"pool{widen}"],
                    "pool": (2, 2)}]
        more, bottom = _units(stage, 1, units, f"pool{widen}", channels)
        layers += more
        widen = str(stage)
    return layers + [{"name": "fc5", "type": "InnerProduct", "bottom": [bottom], "top": ["fc5"], "fc": 512}]


#: After fc5 a released train caffemodel keeps its classifier and loss layers.
TRAINING_TAIL = [{"name": "fc6", "type": "InnerProduct", "bottom": ["fc5"], "top": ["fc6"], "fc": 10},
                 {"name": "softmax_loss", "type": "SoftmaxWithLoss", "bottom": ["fc6", "label"], "top": ["loss"]}]


def random_blobs(layers: list[dict], input_size: tuple[int, int], seed: int) -> dict[str, list[np.ndarray]]:
    """Seeded weights scaled so that the features stay O(1): conv/fc ~ N(0, 1/fan_in), biases
    and PReLU slopes random, so every blob's place and layout matters."""
    rng = np.random.default_rng(seed)
    channels, size, blobs = {"data": 3}, {"data": input_size}, {}
    for layer in layers:
        bottom, top = layer["bottom"][0], layer["top"][0]
        if layer["type"] == "Convolution":
            out, k, s, p = layer["conv"]
            fan_in = channels[bottom] * k * k
            blobs[layer["name"]] = [rng.normal(0, np.sqrt(1.0 / fan_in), (out, channels[bottom], k, k)),
                                    rng.normal(0, 0.05, out)]
            channels[top] = out
            size[top] = tuple((d + 2 * p - k) // s + 1 for d in size[bottom])
        elif layer["type"] == "PReLU":
            blobs[layer["name"]] = [rng.uniform(0.0, 0.5, channels[bottom])]
        elif layer["type"] == "Pooling":
            channels[top], size[top] = channels[bottom], tuple(-(-(d - 2) // 2) + 1 for d in size[bottom])
        elif layer["type"] == "Eltwise":
            channels[top], size[top] = channels[bottom], size[bottom]
        elif layer["type"] == "InnerProduct":
            fan_in = channels[bottom] * int(np.prod(size[bottom]))
            blobs[layer["name"]] = [rng.normal(0, np.sqrt(1.0 / fan_in), (layer["fc"], fan_in)), rng.normal(0, 0.05, layer["fc"])]
            channels[top], size[top] = layer["fc"], (1, 1)
    return {name: [b.astype(np.float32) for b in values] for name, values in blobs.items()}


# ------------------------------------------------------------------------------ the files
V2_PARAM_FIELDS = {"conv": 106, "pool": 121, "fc": 117, "eltwise": 110}
V1_PARAM_FIELDS = {"conv": 10, "pool": 19, "fc": 17, "eltwise": 24}
V1_ENUM = {"Convolution": 4, "InnerProduct": 14, "Pooling": 17, "Eltwise": 25, "SoftmaxWithLoss": 21, "Data": 5,
           "Split": 22, "PReLU": 41}  # 41: PReLU has no V1 enum value; a fork's own number


def _params(layer: dict) -> dict[str, bytes]:
    """Caffe writes repeated uint32 unpacked: one key per value."""
    params = {}
    if "conv" in layer:
        out, k, s, p = layer["conv"]
        params["conv"] = varint_field(1, out) + varint_field(3, p) + varint_field(4, k) + varint_field(6, s)
    if "pool" in layer:
        k, s = layer["pool"]
        params["pool"] = varint_field(1, 0) + varint_field(2, k) + varint_field(3, s)
    if "fc" in layer:
        params["fc"] = varint_field(1, layer["fc"])
    if layer["type"] == "Eltwise":
        params["eltwise"] = varint_field(1, 1)
    return params


def encode_layer(layer: dict, blobs: list[np.ndarray], version: str) -> bytes:
    legacy = version == "V1"
    if version == "V2":
        out = string_field(1, layer["name"]) + string_field(2, layer["type"])
        out += b"".join(string_field(3, b) for b in layer["bottom"]) + b"".join(string_field(4, t) for t in layer["top"])
        out += b"".join(bytes_field(7, blob(b)) for b in blobs)
        fields = V2_PARAM_FIELDS
    else:
        out = b"".join(string_field(2, b) for b in layer["bottom"]) + b"".join(string_field(3, t) for t in layer["top"])
        out += string_field(4, layer["name"]) + varint_field(5, V1_ENUM[layer["type"]])
        out += b"".join(bytes_field(6, blob(b, legacy)) for b in blobs)
        fields = V1_PARAM_FIELDS
    return out + b"".join(bytes_field(fields[kind], payload) for kind, payload in _params(layer).items())


def caffemodel(name: str, layers: list[dict], blobs: dict[str, list[np.ndarray]], version: str,
               input_size: tuple[int, int] | None = None) -> bytes:
    """A NetParameter: name, optional input/input_dim (deploy style), a Data layer and Split
    layers as Caffe saves them from a train net, the layers, then the training tail."""
    out = [string_field(1, name)]
    if input_size:
        out += [string_field(3, "data"), *(varint_field(4, d) for d in (1, 3, *input_size))]
    data = {"name": "data", "type": "Data", "bottom": [], "top": ["data", "label"]}
    split = {"name": "fc5_fc5_0_split", "type": "Split", "bottom": ["fc5"], "top": ["fc5_split_0"]}
    field = 100 if version == "V2" else 2
    for layer in [data, *layers, split, *TRAINING_TAIL]:
        out.append(bytes_field(field, encode_layer(layer, blobs.get(layer["name"], []), version)))
    return b"".join(out)


def mean_binaryproto(mean_bgr_chw: np.ndarray) -> bytes:
    """A BlobProto of shape (1, 3, H, W), as Caffe's compute_image_mean writes it (legacy dims)."""
    return blob(mean_bgr_chw[None], legacy=True)


# -------------------------------------------------------------------- the reference forward
def torch_forward(layers: list[dict], blobs: dict[str, list[np.ndarray]], data_nchw: np.ndarray) -> np.ndarray:
    """Runs the description with PyTorch ops in float64, as Caffe computes it: convolutions with
    symmetric padding, per-channel PReLU, Eltwise sum, max pooling rounding up, InnerProduct
    on the (C, H, W)-flattened map. Returns the top of the last layer."""
    import torch
    import torch.nn.functional as F

    values = {"data": torch.from_numpy(np.asarray(data_nchw, np.float64))}

    def weights(name):
        return [torch.from_numpy(b.astype(np.float64)) for b in blobs[name]]

    with torch.no_grad():
        for layer in layers:
            x = values[layer["bottom"][0]]
            if layer["type"] == "Convolution":
                _, _, stride, pad = layer["conv"]
                w, b = weights(layer["name"])
                y = F.conv2d(x, w, b, stride=stride, padding=pad)
            elif layer["type"] == "PReLU":
                y = F.prelu(x, weights(layer["name"])[0])
            elif layer["type"] == "Eltwise":
                y = x + values[layer["bottom"][1]]
            elif layer["type"] == "Pooling":
                y = F.max_pool2d(x, layer["pool"][0], layer["pool"][1], ceil_mode=True)
            else:
                w, b = weights(layer["name"])
                y = torch.flatten(x, 1) @ w.T + b
            values[layer["top"][0]] = y
    return values[layers[-1]["top"][0]].numpy()

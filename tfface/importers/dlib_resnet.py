"""dlib's ``dlib_face_recognition_resnet_model_v1.dat`` -> the ``dlib_resnet_v1`` backbone, in NumPy.

The file is dlib's own serialization of the trained network (``dlib/serialize.h``, ``dlib/dnn``):
integers as one control byte (bit 7 = sign, low nibble = byte count) and little-endian bytes,
floats as mantissa and exponent integers, tensors as a shape and float32 payload. The network is
stored outermost layer first as a run of version integers, then the layer records in input to
output order; tag and skip layers store no ids, so the graph is checked against the known
architecture (:data:`tfface.models.dlib_resnet.BLOCKS`) record by record. Anything else (a
truncated file, dlib's shape predictors or detector, random bytes) is refused with one line
naming the file and the first mismatch.

Source: the PyPI package ``face_recognition_models`` (Adam Geitgey), which ships Davis King's
model file; dlib's author released it into the public domain (CC0 1.0). No dlib at run time.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from tfface.core.errors import UserError
from tfface.core.preprocessing import DLIB_MEANS
from tfface.importers.registry import Imported, file_sha256, register_pretrained
from tfface.models.dlib_resnet import BLOCKS, STEM_FILTERS, STEM_KERNEL

NAME = "dlib_resnet_v1"
FILE_NAME = "dlib_face_recognition_resnet_model_v1.dat"
PACKAGE = "face_recognition_models"
IMAGE_SIZE = 150
EMBEDDING_SIZE = 128
ALIGNMENT = {"align": "dlib", "image_size": [IMAGE_SIZE, IMAGE_SIZE], "margin": 0.0}
#: Typical L2 norm of the model's descriptors on real faces (dlib's own chips of the 34 photos of
#: ../shared/testdata/faces: mean 1.52, range 1.44-1.64, measured 2026-12-07): converts dlib's
#: same-person threshold on raw descriptors to one on the L2-normalised embeddings exports give.
DESCRIPTOR_NORM = 1.52
#: What that threshold gives on testdata/faces/pairs.csv (deepface's 300 pairs: 38 same, 262
#: different) through tfface's MTCNN and dlib chips (2026-12-07; tests/importers check it again).
THRESHOLD_CHECK = {"far": 0.0, "tar": 1.0, "num_pairs": 300}
LICENCE = ("public domain (CC0 1.0): dlib_face_recognition_resnet_model_v1 by Davis King (dlib.net), "
           "as shipped by the PyPI package face_recognition_models")


class _Mismatch(Exception):
    """The first place where the file differs from dlib's face recognition ResNet."""


class _Reader:
    """dlib's serialization primitives over the bytes of one file."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise _Mismatch(f"file ends at byte {len(self.data)} inside {what} (needs {self.pos + n})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self, what: str) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise _Mismatch(f"byte {self.pos - 1} is not an integer of {what} (control byte 0x{control:02x})")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def expect_int(self, expected: int, what: str) -> None:
        value = self.integer(what)
        if value != expected:
            raise _Mismatch(f"{what} is {value}, expected {expected}")

    def boolean(self, what: str) -> bool:
        value = self.take(1, what)
        if value not in (b"0", b"1"):
            raise _Mismatch(f"{what} is {value!r}, expected a bool ('0' or '1')")
        return value == b"1"

    def string(self, what: str, limit: int = 64) -> str:
        size = self.integer(what)
        if not 0 <= size <= limit:
            raise _Mismatch(f"{what} has length {size}, expected a short string")
        return self.take(size, what).decode("latin-1")

    def expect_string(self, expected: str, what: str) -> None:
        value = self.string(what)
        if value != expected:
            raise _Mismatch(f"{what} is {value!r}, expected {expected!r}")

    def real(self, what: str) -> float:
        mantissa, exponent = self.integer(what), self.integer(what)
        if exponent >= 32000:
            return (float("inf"), float("-inf"), float("nan"))[min(exponent - 32000, 2)]
        return float(mantissa) * 2.0 ** exponent

    def shape(self, version: int, what: str) -> tuple[int, ...]:
        self.expect_int(version, f"{what} version")
        return tuple(self.integer(what) for _ in range(4))

    def tensor(self, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        found = self.shape(2, what)
        if shape is not None and found != shape:
            raise _Mismatch(f"{what} has shape {found}, expected {shape}")
        count = int(np.prod(found))
        return np.frombuffer(self.take(4 * count, what), "<f4").reshape(found)

    def alias(self, what: str, shape: tuple[int, ...]) -> None:
        found = self.shape(1, what)
        if found != shape:
            raise _Mismatch(f"{what} has shape {found}, expected {shape}")


@dataclass
class DlibResnetWeights:
    """The parsed network: conv kernels (HWIO) and biases, affine gammas and betas (in layer
    order: stem, then each block's two), the fc matrix (256, 128), input means, dlib's threshold."""

    convs: list[tuple[np.ndarray, np.ndarray]]
    affines: list[tuple[np.ndarray, np.ndarray]]
    fc: np.ndarray
    means: tuple[float, float, float]
    distance_threshold: float


def _plan() -> list[tuple]:
    """The layers input -> output as (kind, *args): con (filters, inputs, kernel, stride), affine
    (channels), relu, max_pool / avg_pool (nr, nc, stride), add_prev, tag, fc (outputs, inputs)."""
    plan = [("con", STEM_FILTERS, 3, STEM_KERNEL, 2), ("affine", STEM_FILTERS), ("relu",), ("max_pool", 3, 3, 2)]
    channels = STEM_FILTERS
    for filters, down in BLOCKS:
        plan += [("tag",), ("con", filters, channels, 3, 2 if down else 1), ("affine", filters), ("relu",),
                 ("con", filters, filters, 3, 1), ("affine", filters)]
        plan += [("tag",), ("tag",), ("avg_pool", 2, 2, 2)] if down else []
        plan += [("add_prev",), ("relu",)]
        channels = filters
    return plan + [("avg_pool", 0, 0, 1), ("fc", EMBEDDING_SIZE, channels)]


def _layer_record(r: _Reader, layer: tuple, where: str, weights: DlibResnetWeights) -> None:
    """Reads one layer's details (after its version), checking them against ``layer``."""
    kind = layer[0]
    if kind == "con":
        _, filters, inputs, kernel, stride = layer
        r.expect_string("con_4", f"{where} type")
        params = r.tensor(f"{where} params", (filters * inputs * kernel * kernel + filters, 1, 1, 1)).ravel()
        padding = 0 if stride != 1 else kernel // 2
        for name, value in (("num_filters", filters), ("nr", kernel), ("nc", kernel), ("stride_y", stride),
                            ("stride_x", stride), ("padding_y", padding), ("padding_x", padding)):
            r.expect_int(value, f"{where} {name}")
        r.alias(f"{where} filters", (filters, inputs, kernel, kernel))
        r.alias(f"{where} biases", (1, filters, 1, 1))
        for _ in range(4):
            r.real(f"{where} learning rate multipliers")
        kernel_oihw = params[:-filters].reshape(filters, inputs, kernel, kernel)
        weights.convs.append((kernel_oihw.transpose(2, 3, 1, 0), params[-filters:]))
    elif kind == "affine":
        channels = layer[1]
        r.expect_string("affine_", f"{where} type")
        params = r.tensor(f"{where} params", (2 * channels, 1, 1, 1)).ravel()
        r.alias(f"{where} gamma", (1, channels, 1, 1))
        r.alias(f"{where} beta", (1, channels, 1, 1))
        r.expect_int(0, f"{where} mode (0 = per channel)")
        weights.affines.append((params[:channels], params[channels:]))
    elif kind in ("relu", "add_prev"):
        r.expect_string(f"{kind}_", f"{where} type")
    elif kind in ("max_pool", "avg_pool"):
        _, nr, nc, stride = layer
        r.expect_string(f"{kind}_2", f"{where} type")
        for name, value in (("nr", nr), ("nc", nc), ("stride_y", stride), ("stride_x", stride),
                            ("padding_y", 0), ("padding_x", 0)):
            r.expect_int(value, f"{where} {name}")
    elif kind == "fc":
        _, outputs, inputs = layer
        r.expect_string("fc_2", f"{where} type")
        r.expect_int(outputs, f"{where} num_outputs")
        r.expect_int(inputs, f"{where} num_inputs")
        weights.fc = r.tensor(f"{where} params", (inputs, outputs, 1, 1)).reshape(inputs, outputs)
        r.alias(f"{where} weights", (inputs, outputs, 1, 1))
        r.alias(f"{where} biases", (0, 0, 0, 0))
        r.expect_int(1, f"{where} bias mode (1 = no bias)")
        for _ in range(4):
            r.real(f"{where} learning rate multipliers")


def _layer_state(r: _Reader, where: str, tensors: int = 3) -> None:
    """The training state after a layer's details: 3 bools and empty gradient/output tensors."""
    for _ in range(3):
        r.boolean(f"{where} state flag")
    for _ in range(tensors):
        r.tensor(f"{where} state tensor")


def parse(data: bytes) -> DlibResnetWeights:
    """The network in ``data`` (the bytes of the ``.dat`` file); raises _Mismatch at the first
    byte that differs from dlib's face recognition ResNet."""
    r = _Reader(data)
    r.expect_int(1, "loss layer version")
    r.expect_string("loss_metric_2", "loss layer type")
    r.real("loss margin")
    weights = DlibResnetWeights([], [], np.zeros(0), (0.0, 0.0, 0.0), r.real("loss distance threshold"))
    plan = _plan()
    versions = [1 if layer[0] == "tag" else 2 for layer in plan]
    versions[0] = 3
    for depth, version in enumerate(reversed(versions)):
        r.expect_int(version, f"version of layer {depth} (outermost first)")
    r.expect_string("input_rgb_image_sized", "input layer type")
    means = tuple(r.real("input layer mean") for _ in range(3))
    if not np.allclose(means, DLIB_MEANS, atol=1e-3):
        raise _Mismatch(f"input layer means are {means}, expected {DLIB_MEANS}")
    weights.means = means
    r.expect_int(IMAGE_SIZE, "input layer rows")
    r.expect_int(IMAGE_SIZE, "input layer columns")
    for index, layer in enumerate(plan):
        if layer[0] == "tag":
            continue
        where = f"layer {index} ({layer[0]})"
        _layer_record(r, layer, where, weights)
        _layer_state(r, where)
        if index == 0:
            r.expect_int(1, f"{where} sample expansion factor")
    if r.pos != len(data):
        raise _Mismatch(f"{len(data) - r.pos} unexpected bytes after the network at byte {r.pos}")
    return weights


def read_weights(path: str) -> DlibResnetWeights:
    """Parses the ``.dat`` file at ``path``; one-line :class:`UserError` when it is not the network."""
    if not os.path.isfile(path):
        raise UserError(f"{NAME}: file '{path}' does not exist")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return parse(data)
    except _Mismatch as err:
        raise UserError(f"{NAME}: '{path}' is not dlib's face recognition ResNet: {err}") from None


def assign(backbone, weights: DlibResnetWeights) -> None:
    """Copies parsed weights into a :class:`~tfface.models.dlib_resnet.DlibResNet` (any embedding
    size equal to the file's)."""
    convs = [layer for layer in backbone.layers if layer.name.endswith("_conv")]
    affines = [layer for layer in backbone.layers if layer.name.endswith("_affine")]
    for layer, (kernel, bias) in zip(convs, weights.convs, strict=True):
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    for layer, (gamma, beta) in zip(affines, weights.affines, strict=True):
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    backbone.get_layer("embedding").kernel.assign(weights.fc)


def default_path() -> str:
    """The model file inside the installed ``face_recognition_models`` package (found without
    importing it: its ``__init__`` needs setuptools' ``pkg_resources``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--pretrained {NAME}: the package {PACKAGE} is not installed "
                        f"(pip install {PACKAGE}, or pass the .dat file with --weights)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", FILE_NAME)
    if not os.path.isfile(path):
        raise UserError(f"--pretrained {NAME}: {PACKAGE} has no models/{FILE_NAME}; reinstall it (pip install "
                        f"--force-reinstall {PACKAGE}) or pass the .dat file with --weights")
    return path


def build_pretrained(path: str | None = None):
    """The ``dlib_resnet_v1`` embedder (uint8-range pixels (B, 150, 150, 3) -> raw 128-d
    descriptors, dlib's standardization in-graph) with the weights of ``path`` (default: the
    installed package's file), and that file's path."""
    from tfface.models import build_embedder

    path = path or default_path()
    weights = read_weights(path)
    embedder = build_embedder(NAME, (IMAGE_SIZE, IMAGE_SIZE), EMBEDDING_SIZE, "dlib")
    assign(embedder.get_layer(NAME), weights)
    return embedder, path, weights


def load(path: str | None = None) -> Imported:
    """The pretrained model for ``--pretrained dlib_resnet_v1 [--weights FILE]``."""
    embedder, path, weights = build_pretrained(path)
    value = weights.distance_threshold / DESCRIPTOR_NORM
    threshold = {"distance_metric": 0, "value": round(value ** 2, 4), **THRESHOLD_CHECK,
                 "calibrated_on": f"dlib's threshold {weights.distance_threshold:.2f} on raw descriptors (the file's "
                                  f"loss_metric_2) / {DESCRIPTOR_NORM} (typical descriptor norm), squared: the squared "
                                  f"distance of L2-normalised embeddings; FAR/TAR on deepface's pairs.csv"}
    source = {"format": "dlib", "file": os.path.abspath(path), "sha256": file_sha256(path), "arch": NAME,
              "licence": LICENCE, "threshold": threshold}
    return Imported(embedder, dict(ALIGNMENT), source)


register_pretrained(NAME, load)

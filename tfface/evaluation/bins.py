"""InsightFace ``.bin`` verification sets (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, ...) without MXNet.

A ``.bin`` is a pickle of ``(encoded_images, issame)``: a list of 2N encoded photos (JPEG/PNG
bytes, pairs interleaved (0, 1), (2, 3), ...) and a list of N booleans. Pickles can run code, so
:func:`read_bin_encoded` uses an unpickler that resolves no global except the few plain data
needs (NumPy array and scalar reconstruction, bytes of Python-2-era pickles) and refuses any
other before anything could be called.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
from typing import Sequence

import numpy as np
from absl import logging
from tqdm import tqdm

from tfface.core import images
from tfface.core.errors import UserError, check_file
from tfface.evaluation.pairs import get_paths, read_pairs

# The sets InsightFace / MultiFace report, in the order of their tables.
TARGETS = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw", "cfp_ff", "vgg2_fp")


def _dtype(*args) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("an object array (it could hold arbitrary Python objects)")
    return dtype


def _latin1(text: str, encoding: str) -> bytes:
    """How Python 3 pickles ``bytes`` at protocol <= 2: ``_codecs.encode(text, 'latin1')``."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _frombuffer(buffer, dtype, shape, order) -> np.ndarray:
    """How NumPy pickles arrays at protocol 5 (``numpy.core.numeric._frombuffer``)."""
    return np.frombuffer(buffer, _dtype(dtype)).reshape(shape, order=order)


_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct
_SCALAR = np.float64(0).__reduce__()[0]  # numpy.(_)core.multiarray.scalar
_ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype, ("_codecs", "encode"): _latin1}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # NumPy 1.x and 2.x names
    _ALLOWED[(_module, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_module, "scalar")] = _SCALAR
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _frombuffer


class _DataOnlyUnpickler(pickle.Unpickler):
    """Builds lists, tuples, bytes, str, numbers, bools and plain NumPy arrays; nothing else."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}'") from None


def _as_bytes(item, path: str, index: int) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise UserError(f"bin: image {index} of '{path}' is a {type(item).__name__}, expected encoded image bytes")


def read_bin_encoded(path: str) -> tuple[list[bytes], np.ndarray]:
    """The encoded images (2N,) and ``issame`` (N,) of a ``.bin``, without decoding the images.

    Raises:
        UserError: the file is missing, not a pickle, holds anything but images and labels
            (refused unexecuted), or its image and label counts disagree.
    """
    check_file(path, "bin")
    with open(path, "rb") as f:
        data = f.read()
    try:
        loaded = _DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise UserError(
            f"bin: refusing '{path}': it asks to load {err}, but a .bin holds only encoded images and labels "
            "(nothing from the file was run)"
        ) from None
    except Exception as err:  # truncated or not a pickle at all: any of a dozen exception types
        raise UserError(f"bin: '{path}' is not an InsightFace .bin pickle ({type(err).__name__}: {err})") from None
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise UserError(f"bin: '{path}' holds a {type(loaded).__name__}, expected (images, issame)")
    encoded = [_as_bytes(item, path, i) for i, item in enumerate(loaded[0])]
    try:
        issame = np.asarray(loaded[1])
    except ValueError:
        issame = np.asarray([], object)
    if issame.ndim != 1 or issame.dtype.kind not in "bi" or not np.isin(issame, (0, 1)).all():
        raise UserError(f"bin: the labels of '{path}' are not a list of booleans")
    if len(encoded) != 2 * len(issame):
        raise UserError(
            f"bin: '{path}' has {len(encoded)} images but {len(issame)} pair labels (expected 2 images per label)"
        )
    return encoded, issame.astype(bool)


@dataclasses.dataclass
class BinSet:
    """A decoded ``.bin``: interleaved pair images (2N, H, W, 3) uint8, ``issame`` (N,)."""

    name: str
    images: np.ndarray
    issame: np.ndarray
    skipped_pairs: int  # pairs dropped because one of their images could not be decoded


def load_bin(path: str, image_size: Sequence[int] | None = None, progress: bool = False) -> BinSet:
    """Reads and decodes a ``.bin`` through the image contract, resized to ``image_size``
    (a progress bar on stderr with ``progress``).

    A pair whose image cannot be decoded is dropped and counted, never half-used.
    """
    encoded, issame = read_bin_encoded(path)
    pixels, keep = [], []
    name = os.path.splitext(os.path.basename(path))[0]
    for i in tqdm(range(len(issame)), desc=f"decoding {name}", unit="pair", disable=not progress, leave=False):
        try:
            pair = [images.load(encoded[2 * i + k], image_size) for k in (0, 1)]
        except UserError as err:
            logging.warning("bin: pair %d of %s skipped: %s", i, path, err)
            continue
        pixels += pair
        keep.append(i)
    if not keep:
        raise UserError(f"bin: no image of '{path}' could be decoded")
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        raise UserError(f"bin: the images of '{path}' have different sizes {sorted(shapes)}; give an image_size")
    return BinSet(name, np.stack(pixels), issame[keep], len(issame) - len(keep))


def read_bin(path: str, image_size: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (M, H, W, 3), issame bool (M // 2,))`` of an InsightFace ``.bin``."""
    bin_set = load_bin(path, image_size)
    return bin_set.images, bin_set.issame


def write_bin(path: str, encoded_images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Writes a ``.bin`` InsightFace's and our readers load (atomically: tmp + rename).

    Images that are not JPEG/PNG/GIF/BMP (PGM, TIFF, ...) are stored as lossless PNG.
    """
    issame = [bool(s) for s in issame]
    if len(encoded_images) != 2 * len(issame):
        raise UserError(f"bin: {len(encoded_images)} images for {len(issame)} pairs (expected 2 images per pair)")
    stored = []
    for i, data in enumerate(encoded_images):
        try:
            stored.append(images.canonical_bytes(bytes(data)))
        except ValueError as err:
            raise UserError(f"bin: image {i} for '{path}' is not an image ({err})") from None
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump((stored, issame), f, protocol=4)
    os.replace(tmp, path)


def pairs_to_bin(lfw_dir: str, lfw_pairs: str, output: str) -> int:
    """Writes the pairs of an LFW-layout directory + ``pairs.txt`` as a ``.bin``; returns N pairs."""
    paths, issame = get_paths(lfw_dir, read_pairs(lfw_pairs))
    write_bin(output, [images.read_bytes(p) for p in paths], issame)
    return len(issame)


def find_bins(bins_dir: str, targets: Sequence[str]) -> list[str]:
    """``<bins_dir>/<target>.bin`` for every target; a clear error naming the missing ones."""
    paths = [os.path.join(bins_dir, f"{t}.bin") for t in targets]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        present = sorted(n[:-4] for n in os.listdir(bins_dir) if n.endswith(".bin")) if os.path.isdir(bins_dir) else []
        raise UserError(f"bins_dir: {', '.join(missing)} not found (.bin sets present: {present or 'none'})")
    return paths

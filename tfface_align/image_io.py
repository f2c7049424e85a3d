"""Reading photos robustly: EXIF orientation, grey/alpha/16-bit/CMYK inputs, huge and broken files.

Everything returns RGB ``uint8`` arrays of shape (H, W, 3). :func:`load_photo` never raises for a
bad file: it reports what it found, so a dataset run can skip and count it. Formats are sniffed
by :func:`tfface.core.images.sniff` (PGM/PPM included), and the pixels equal those of the image
contract, :func:`tfface.core.images.load` (``tests/test_images.py`` checks it on real photos).
"""
from __future__ import annotations

import math
import struct
from typing import NamedTuple

import cv2
import numpy as np

from tfface.core.errors import UserError
from tfface.core.images import sniff

HUGE_PIXELS = 40_000_000  # photos at least this big are decoded at reduced resolution


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, colour components) from a JPEG's start-of-frame marker, or None."""
    pos = 2
    while pos + 10 < len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return height, width, data[pos + 9]
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 1 if marker == 0xFF else 2
            continue
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) read from a JPEG or PNG header without decoding, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    frame = _jpeg_frame(data) if data.startswith(b"\xff\xd8") else None
    return frame[:2] if frame else None


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 (H, W, 3) view of an image array: grey is repeated, alpha dropped, 16-bit
    scaled to 8 bits, floats taken as 0..255."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


class Photo(NamedTuple):
    """Result of :func:`load_photo`: ``image`` is None when the file cannot be used."""

    image: np.ndarray | None
    status: str  # "ok", or the reason it was skipped: empty, not_an_image, corrupt, unreadable
    notes: tuple[str, ...]  # what was fixed: "alpha", "16bit", "grey", "cmyk", "downscaled_x2", ...
    scale: float  # original pixels per decoded pixel (> 1 when a huge photo was downscaled)


def _decode(data: bytes, max_pixels: int) -> tuple[np.ndarray | None, list[str], float]:
    notes: list[str] = []
    buf = np.frombuffer(data, np.uint8)
    flags, scale = cv2.IMREAD_COLOR, 1.0
    size = header_size(data)
    if size and size[0] * size[1] >= max_pixels and data.startswith(b"\xff\xd8"):
        for factor, flag in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (8, cv2.IMREAD_REDUCED_COLOR_8)):
            flags, scale = flag, float(factor)
            if size[0] * size[1] / factor ** 2 < max_pixels:
                break
        notes.append(f"downscaled_x{int(scale)}")
    elif size and size[0] * size[1] >= max_pixels:
        return None, ["huge"], 1.0
    # IMREAD_COLOR applies the EXIF orientation, converts grey/CMYK to BGR and 16 bits to 8.
    bgr = cv2.imdecode(buf, flags)
    if bgr is None:
        return None, notes, scale
    if not data.startswith(b"\xff\xd8"):  # look for alpha / depth / grey in the other formats
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if raw is not None:
            if raw.dtype != np.uint8:
                notes.append(f"{raw.dtype.itemsize * 8}bit")
            if raw.ndim == 2:
                notes.append("grey")
            elif raw.shape[2] == 4 and raw.shape[:2] == bgr.shape[:2]:
                alpha = raw[:, :, 3:4].astype(np.float32) / (65535.0 if raw.dtype == np.uint16 else 255.0)
                bgr = np.rint(bgr * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)  # over white
                notes.append("alpha")
    elif (_jpeg_frame(data) or (0, 0, 0))[2] == 4:
        notes.append("cmyk")
    if bgr.shape[0] * bgr.shape[1] >= max_pixels:
        factor = math.ceil(math.sqrt(bgr.shape[0] * bgr.shape[1] / (max_pixels - 1)))
        bgr = cv2.resize(bgr, (bgr.shape[1] // factor, bgr.shape[0] // factor), interpolation=cv2.INTER_AREA)
        scale *= factor
        notes.append(f"downscaled_x{factor}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), notes, scale


def load_photo(path: str, max_pixels: int = HUGE_PIXELS) -> Photo:
    """Reads ``path`` for detection; never raises for a bad file (see :class:`Photo`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return Photo(None, "unreadable", (str(err),), 1.0)
    if not data:
        return Photo(None, "empty", (), 1.0)
    if sniff(data) is None:
        return Photo(None, "not_an_image", (), 1.0)
    try:
        image, notes, scale = _decode(data, max_pixels)
    except (cv2.error, ValueError, struct.error) as err:
        return Photo(None, "corrupt", (str(err).strip().splitlines()[-1][:200],), 1.0)
    if image is None:
        return Photo(None, "huge" if "huge" in notes else "corrupt", tuple(notes), 1.0)
    return Photo(image, "ok", tuple(notes), scale)


def read_image(source: str | bytes) -> np.ndarray:
    """Reads a photo (path or encoded bytes) as RGB uint8 (H, W, 3), EXIF orientation applied."""
    if isinstance(source, bytes):
        bgr = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError("image: the bytes given are not a decodable image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    photo = load_photo(source, max_pixels=1 << 62)
    if photo.image is None:
        raise UserError(f"image: cannot read '{source}' ({photo.status})")
    return photo.image

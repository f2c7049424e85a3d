"""The image contract: how encoded photos become model inputs, everywhere.

Training (``tf.data``), evaluation, :meth:`tfface.recognition.inference.Embedder.embed_files`, the
classifier, the facebank and every serving signature of an exported SavedModel read images
through the two TF functions here, so a face gives bit-identical model inputs on every path:

* :func:`decode`: JPEG/PNG/GIF/BMP bytes -> uint8 (H, W, 3) with TF ops only (usable in ``tf.data``, in a
  ``tf.function`` and inside a SavedModel). JPEGs are decoded with libjpeg's accurate integer
  IDCT (the same pixels OpenCV's ``imdecode`` gives) and turned upright by their EXIF
  orientation; grey is repeated to RGB, alpha is composited over white, 16-bit PNGs keep their
  high byte (CMYK JPEGs are converted by libjpeg: within 1 level of OpenCV).
* :func:`resize`: antialiased bilinear to the model's (height, width), rounded to uint8; an
  image that already has that size is left untouched.

Other formats (PGM/PPM, TIFF, WebP, ...) are re-encoded losslessly as PNG by
:func:`canonical_bytes` (OpenCV) before they enter a TFRecord or a graph; :func:`load` does that
for files read eagerly.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import tensorflow as tf

from tfface.core.errors import UserError

# Formats tf.io.decode_image reads itself; anything else goes through canonical_bytes first.
TF_FORMATS = ("jpeg", "png", "gif", "bmp")
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
)
_EXIF_SCAN_BYTES = 65536  # the EXIF block (APP1) sits in a JPEG's first segments
_MAX_IFD_ENTRIES = 64
ORIENTATION_TAG = 0x0112


def sniff(data: bytes) -> str | None:
    """The image format named by the first bytes of ``data``, or None when it is not an image."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "pnm"  # PBM / PGM / PPM (ORL's faces are PGM)
    return None


def canonical_bytes(data: bytes) -> bytes:
    """``data`` if :func:`decode` reads it as it is, else the same pixels re-encoded as PNG.

    Raises:
        ValueError: ``data`` is empty, not an image, or an image OpenCV cannot decode.
    """
    if not data:
        raise ValueError("empty file")
    fmt = sniff(data)
    if fmt is None:
        raise ValueError("not an image (unknown format)")
    if fmt in TF_FORMATS:
        return data
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise ValueError(f"corrupt {fmt} image")
    ok, png = cv2.imencode(".png", pixels)  # PNG keeps grey, alpha and 16 bits as they are
    if not ok:
        raise ValueError(f"{fmt} image with {pixels.dtype} pixels cannot be re-encoded as PNG")
    return png.tobytes()


def _u16(data: tf.Tensor, pos: tf.Tensor, little: tf.Tensor) -> tf.Tensor:
    """Unsigned 16-bit integers at ``pos`` (any shape) of a uint8 vector; 0 past its end."""
    n = tf.shape(data)[0]
    byte = lambda p: tf.where((p >= 0) & (p < n), tf.gather(data, tf.clip_by_value(p, 0, n - 1)), 0)  # noqa: E731
    b0, b1 = tf.cast(byte(pos), tf.int32), tf.cast(byte(pos + 1), tf.int32)
    return tf.where(little, b0 + b1 * 256, b0 * 256 + b1)


def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1-8) of a JPEG's bytes, 1 when it has none (TF ops)."""
    data = tf.io.decode_raw(tf.strings.substr(encoded, 0, _EXIF_SCAN_BYTES), tf.uint8)
    data = tf.concat([data, tf.zeros([16], tf.uint8)], 0)  # room for the pattern scan below
    n = tf.shape(data)[0]
    # "Exif\0\0" at the start of an APP1 segment (FF E1, then a 2-byte length).
    pattern = [0xFF, 0xE1, None, None, 0x45, 0x78, 0x69, 0x66, 0x00, 0x00]
    found = tf.ones([n - len(pattern)], tf.bool)
    for i, value in enumerate(pattern):
        if value is not None:
            found &= tf.equal(data[i:n - len(pattern) + i], value)
    has_exif = tf.reduce_any(found)
    tiff = tf.cast(tf.argmax(tf.cast(found, tf.int32)), tf.int32) + len(pattern)
    little = tf.equal(data[tf.minimum(tiff, n - 1)], ord("I"))
    low, high = _u16(data, tiff + 4, little), _u16(data, tiff + 6, little)
    ifd = tiff + tf.where(little, low + high * 65536, low * 65536 + high)  # IFD0's 32-bit offset
    count = tf.minimum(_u16(data, ifd, little), _MAX_IFD_ENTRIES)
    entries = ifd + 2 + 12 * tf.range(_MAX_IFD_ENTRIES)
    is_orientation = (_u16(data, entries, little) == ORIENTATION_TAG) & (tf.range(_MAX_IFD_ENTRIES) < count)
    value = tf.reduce_max(tf.where(is_orientation, _u16(data, entries + 8, little), 0))
    valid = has_exif & tf.reduce_any(is_orientation) & (value >= 1) & (value <= 8)
    return tf.where(valid, value, 1)


def orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns an (H, W, C) image upright according to its EXIF ``orientation`` (1-8)."""
    transpose = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,
        lambda: image[:, ::-1],  # 2: mirrored
        lambda: image[::-1, ::-1],  # 3: rotated 180
        lambda: image[::-1],  # 4: upside-down mirror
        lambda: transpose(image),  # 5: mirrored, then rotated 90 counter-clockwise
        lambda: transpose(image)[:, ::-1],  # 6: rotate 90 clockwise to view
        lambda: transpose(image)[::-1, ::-1],  # 7: mirrored, then rotated 90 clockwise
        lambda: transpose(image)[::-1],  # 8: rotate 90 counter-clockwise to view
    ]
    return tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, branches)


def _decode_other(encoded: tf.Tensor) -> tf.Tensor:
    """PNG/GIF/BMP -> uint8 RGB: 16 bits keep their high byte, alpha over white."""
    image = tf.io.decode_image(encoded, dtype=tf.uint16, expand_animations=False)
    channels = tf.shape(image)[2]
    colour = tf.cond(channels < 3, lambda: tf.concat([image[:, :, :1]] * 3, 2), lambda: image[:, :, :3])
    colour = tf.cast(tf.bitwise.right_shift(colour, 8), tf.uint8)

    def over_white():
        alpha = tf.cast(image[:, :, -1:], tf.float32) / 65535.0
        blended = tf.cast(colour, tf.float32) * alpha + 255.0 * (1.0 - alpha)
        return tf.cast(tf.clip_by_value(tf.round(blended), 0.0, 255.0), tf.uint8)

    return tf.cond(tf.equal(channels % 2, 0), over_white, lambda: colour)  # 2 or 4 channels carry alpha


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) -> uint8 (H, W, 3), upright (TF ops)."""
    encoded = tf.convert_to_tensor(encoded, tf.string)
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")

    def jpeg():
        image = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")
        return orient(image, exif_orientation(encoded))

    image = tf.cond(is_jpeg, jpeg, lambda: _decode_other(encoded))
    image.set_shape([None, None, 3])
    return image


def resize(images: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """uint8 image (H, W, 3) or batch (B, H, W, 3) -> uint8 at ``image_size`` = (height, width).

    Antialiased bilinear (a box-like filter when shrinking, so no aliasing of large photos),
    rounded to the nearest level; an image already at ``image_size`` is returned unchanged.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise ValueError(f"images: expected uint8 pixels, got {images.dtype.name}")
    height, width = (int(v) for v in image_size)
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[-3], height), tf.equal(shape[-2], width))

    def scaled():
        out = tf.image.resize(images, (height, width), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    out = tf.cond(same, lambda: tf.identity(images), scaled)
    out.set_shape(images.shape[:-3].concatenate([height, width, 3]))
    return out


@tf.function
def _load(encoded: tf.Tensor, image_size: tuple[int, int] | None) -> tf.Tensor:
    image = decode(encoded)
    return image if image_size is None else resize(image, image_size)


def read_bytes(path: str) -> bytes:
    """The bytes of an image file; :class:`UserError` naming the file when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise UserError(f"image: cannot read '{path}' ({err.strerror or err})") from None


def load(source: str | bytes, image_size: Sequence[int] | None = None) -> np.ndarray:
    """Reads a photo (path or encoded bytes) as uint8 RGB (H, W, 3), resized when ``image_size``
    is given, exactly as :func:`decode` + :func:`resize` do in a graph.

    Raises:
        UserError: the file is missing, empty, not an image or corrupt (the message names it).
    """
    name = f"'{source}'" if isinstance(source, str) else "the bytes given"
    data = read_bytes(source) if isinstance(source, str) else bytes(source)
    try:
        data = canonical_bytes(data)
        size = None if image_size is None else tuple(int(v) for v in image_size)
        return _load(tf.constant(data), size).numpy()
    except (ValueError, tf.errors.InvalidArgumentError) as err:
        reason = str(err).strip().splitlines()[0][:200] if isinstance(err, ValueError) else "corrupt image data"
        raise UserError(f"image: cannot decode {name} ({reason})") from None

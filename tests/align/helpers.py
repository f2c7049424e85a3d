"""Small image files for the tests, made with OpenCV only."""
from __future__ import annotations

import struct

import cv2
import numpy as np


def jpeg_with_orientation(upright_rgb: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG whose pixels are stored rotated, with the EXIF orientation that undoes it
    (6: the viewer turns the stored pixels 90 degrees clockwise)."""
    stored = {6: cv2.ROTATE_90_COUNTERCLOCKWISE, 8: cv2.ROTATE_90_CLOCKWISE, 3: cv2.ROTATE_180}[orientation]
    jpeg = cv2.imencode(".jpg", cv2.rotate(upright_rgb[:, :, ::-1], stored), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) \
        + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = jpeg.tobytes()
    return data[:2] + app1 + data[2:]

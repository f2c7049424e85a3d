"""Robust photo reading: EXIF, grey, alpha, 16-bit, CMYK, huge and broken files."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from tests.align.helpers import jpeg_with_orientation
from tfface.core.errors import UserError
from tfface_align.image_io import header_size, load_photo, read_image, to_rgb_uint8

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture
def face(faces_dir) -> np.ndarray:
    return cv2.resize(cv2.imread(os.path.join(faces_dir, "img25.jpg")), (200, 160))[:, :, ::-1].copy()


def test_exif_orientation_is_applied(face, tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_with_orientation(face, 6))
    image = read_image(str(path))
    assert image.shape == face.shape
    assert np.abs(image.astype(float) - face).mean() < 3
    assert np.array_equal(read_image(path.read_bytes()), image)


def test_broken_files_are_reported_not_raised(tmp_path, face):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    good = cv2.imencode(".jpg", face)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(good[:400])
    assert load_photo(str(tmp_path / "empty.jpg")).status == "empty"
    assert load_photo(str(tmp_path / "notes.jpg")).status == "not_an_image"
    assert load_photo(str(tmp_path / "garbage.jpg")).status == "corrupt"
    assert load_photo(str(tmp_path / "cut.jpg")).status == "corrupt"
    assert load_photo(str(tmp_path / "missing.jpg")).status == "unreadable"
    with pytest.raises(UserError, match="notes.jpg"):
        read_image(str(tmp_path / "notes.jpg"))


def test_sixteen_bit_grey_and_alpha(tmp_path, face):
    deep = face.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep.png"), deep[:, :, ::-1])
    photo = load_photo(str(tmp_path / "deep.png"))
    assert photo.status == "ok" and "16bit" in photo.notes
    assert np.abs(photo.image.astype(int) - face).max() <= 1

    cv2.imwrite(str(tmp_path / "grey.png"), face[:, :, 0])
    photo = load_photo(str(tmp_path / "grey.png"))
    assert "grey" in photo.notes and photo.image.shape == face.shape
    assert np.array_equal(photo.image[:, :, 1], face[:, :, 0])

    rgba = np.dstack([face[:, :, ::-1], np.full(face.shape[:2], 255, np.uint8)])
    rgba[:40, :, 3] = 0  # transparent top band
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    photo = load_photo(str(tmp_path / "alpha.png"))
    assert "alpha" in photo.notes
    assert (photo.image[:40] == 255).all()  # laid over white
    assert np.array_equal(photo.image[40:], face[40:])


def test_cmyk_jpeg(face):
    photo = load_photo(os.path.join(DATA, "face_cmyk.jpg"))  # written by Pillow in CMYK
    assert photo.status == "ok" and "cmyk" in photo.notes
    assert photo.image.shape == (200, 200, 3)
    assert photo.image[:, :, 0].mean() > photo.image[:, :, 2].mean() - 20  # skin, not inverted colours


def test_huge_photos_are_decoded_smaller(tmp_path, face):
    big = cv2.resize(face, (800, 640))
    cv2.imwrite(str(tmp_path / "big.jpg"), big[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "big.png"), big[:, :, ::-1])
    assert header_size((tmp_path / "big.jpg").read_bytes()) == (640, 800)
    assert header_size((tmp_path / "big.png").read_bytes()) == (640, 800)
    photo = load_photo(str(tmp_path / "big.jpg"), max_pixels=200_000)  # 512_000 px: JPEG decodes at 1/2
    assert photo.status == "ok" and photo.scale == 2.0 and photo.image.shape == (320, 400, 3)
    assert "downscaled_x2" in photo.notes
    assert load_photo(str(tmp_path / "big.png"), max_pixels=200_000).status == "huge"


def test_to_rgb_uint8():
    assert to_rgb_uint8(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert to_rgb_uint8(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)
    assert to_rgb_uint8(np.full((4, 5, 4), 300.0)).max() == 255
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((4, 5, 2)))

"""The image contract (tfface.core.images): decoding against OpenCV / NumPy references, resizing
against a NumPy antialiased-bilinear reference, and one file -> identical model inputs on every
path (training pipeline, evaluation, embed_files, the SavedModel's embed_encoded)."""
import glob
import os
import shutil
import struct

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfface
from tfface.core import images
from tfface.data import folders, pipeline, tfrecord
from tfface.core.errors import UserError
from tfface.evaluation import load_image
from tfface_align import read_image


def _pattern(height=24, width=36):
    """A picture whose every pixel differs, so any flip or rotation shows."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 7 % 256, y * 11 % 256, (x * 3 + y * 5) % 256], -1).astype(np.uint8)


def _with_exif(jpeg: bytes, orientation: int, little: bool) -> bytes:
    """Inserts an APP1 EXIF segment holding only an orientation tag after the SOI marker."""
    e = "<" if little else ">"
    tiff = (b"II*\x00" if little else b"MM\x00*") + struct.pack(e + "I", 8)
    tiff += struct.pack(e + "H", 2)  # two IFD0 entries: a harmless one, then orientation
    tiff += struct.pack(e + "HHI", 0x010F, 2, 4) + b"abc\x00"  # Make = "abc"
    tiff += struct.pack(e + "HHIH", 0x0112, 3, 1, orientation) + b"\x00\x00"
    tiff += struct.pack(e + "I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("little", [True, False])
def test_exif_orientation_matches_opencv(little):
    jpeg = cv2.imencode(".jpg", _pattern(), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    for orientation in range(1, 9):
        data = _with_exif(jpeg, orientation, little)
        expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert int(images.exif_orientation(data)) == orientation
        np.testing.assert_array_equal(images.load(data), expected, err_msg=f"orientation {orientation}")


def test_formats_against_numpy_references(tmp_path):
    rgb = _pattern()
    bgr = rgb[:, :, ::-1]
    grey = rgb[:, :, 1]
    alpha = (np.arange(rgb.size // 3).reshape(rgb.shape[:2]) * 5 % 256).astype(np.uint8)
    deep = rgb.astype(np.uint16) * 257 + 100
    over_white = np.rint(rgb * (alpha[..., None] / 255.0) + 255.0 * (1 - alpha[..., None] / 255.0))
    cases = {
        ".png": (bgr, rgb),
        ".bmp": (bgr, rgb),
        ".webp": (bgr, None),  # lossy by default in OpenCV: compare with OpenCV's own decode
        ".tiff": (bgr, rgb),
        ".pgm": (grey, np.repeat(grey[..., None], 3, 2)),
        ".ppm": (bgr, rgb),
        "-grey.png": (grey, np.repeat(grey[..., None], 3, 2)),
        "-alpha.png": (np.dstack([bgr, alpha]), over_white.astype(np.uint8)),
        "-16bit.png": (deep[:, :, ::-1], (deep >> 8).astype(np.uint8)),
    }
    for suffix, (pixels, expected) in cases.items():
        path = str(tmp_path / f"im{suffix}")
        assert cv2.imwrite(path, pixels), suffix
        if expected is None:
            expected = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        got = images.load(path)
        assert got.dtype == np.uint8 and got.shape == rgb.shape, suffix
        np.testing.assert_array_equal(got, expected, err_msg=suffix)
        assert images.sniff(open(path, "rb").read()) is not None, suffix


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"hello, not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    for name, reason in (("empty.jpg", "empty"), ("text.jpg", "not an image"), ("broken.jpg", "corrupt")):
        with pytest.raises(UserError, match=f"{name}.*{reason}"):
            images.load(str(tmp_path / name))
    with pytest.raises(UserError, match="missing.jpg"):
        images.load(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="uint8"):
        images.resize(tf.zeros([4, 4, 3], tf.float32), (2, 2))


def _resize_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear: a triangle filter stretched by the shrink factor, weights normalised."""

    def weights(n_in, n_out):
        scale = n_in / n_out
        radius = max(scale, 1.0)
        centres = (np.arange(n_out) + 0.5) * scale
        taps = np.arange(n_in) + 0.5
        w = np.maximum(0.0, 1.0 - np.abs(taps[None, :] - centres[:, None]) / radius)
        return w / w.sum(1, keepdims=True)

    out = np.einsum("oh,hwc->owc", weights(image.shape[0], height), image.astype(np.float64))
    out = np.einsum("pw,owc->opc", weights(image.shape[1], width), out)
    return np.clip(np.rint(out), 0, 255)


def test_resize_against_numpy_reference():
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (61, 47, 3)), (0, 0), 1.5).astype(np.uint8)
    for size in ((20, 16), (112, 96), (61, 30)):
        got = images.resize(image, size).numpy().astype(int)
        diff = np.abs(got - _resize_reference(image, *size))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (size, diff.max())
    same = images.resize(image, image.shape[:2]).numpy()
    np.testing.assert_array_equal(same, image)  # untouched, not resampled
    batch = images.resize(np.stack([image, image[::-1]]), (20, 16)).numpy()
    np.testing.assert_array_equal(batch[0], images.resize(image, (20, 16)).numpy())


def test_real_photos_decode_as_opencv_does(faces_dir, orl_dir):
    """tfface.core.images and tfface_align's OpenCV reader give the same pixels: one contract."""
    paths = sorted(glob.glob(os.path.join(faces_dir, "*.jpg")))[:6] + [os.path.join(orl_dir, "s1", "1.pgm")]
    for path in paths:
        np.testing.assert_array_equal(images.load(path), read_image(path), err_msg=path)


def test_one_file_gives_identical_model_inputs_on_every_path(faces_dir, orl_dir, tmp_path):
    size = (48, 32)
    src = tmp_path / "ids"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    shutil.copy(os.path.join(faces_dir, "img2.jpg"), src / "a" / "img2.jpg")
    shutil.copy(os.path.join(orl_dir, "s3", "4.pgm"), src / "b" / "4.pgm")
    paths = [str(src / "a" / "img2.jpg"), str(src / "b" / "4.pgm")]
    expected = np.stack([images.load(p, size) for p in paths])

    folders.dataset_to_tfrecords(folders.get_dataset(str(src)), str(tmp_path / "records"), num_shards=1)
    shards = tfrecord.list_shards(str(tmp_path / "records"))
    trained, _ = next(iter(pipeline.make_dataset(shards, 2, size, training=False)))
    np.testing.assert_array_equal(trained.numpy(), expected.astype(np.float32))  # the training input
    np.testing.assert_array_equal(np.stack([load_image(p, size) for p in paths]), expected)  # evaluation

    embedder = tfface.models.build_embedder("mobilefacenet", size, 8)
    model = tfface.load_embedder(tfface.export_saved_model(embedder, str(tmp_path / "export"), "m"))
    from_files = model.embed_files(paths)
    from_pixels = model.embed(expected)
    signature = model._model.signatures["embed_encoded"]
    from_bytes = signature(encoded=tf.constant([open(p, "rb").read() for p in paths[:1]]))["embeddings"].numpy()
    np.testing.assert_array_equal(from_files, from_pixels)
    np.testing.assert_allclose(from_bytes, from_pixels[:1], atol=1e-6)

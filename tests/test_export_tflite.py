"""TFLite parity (LiteRT interpreter) on real aligned faces, one backbone per family.

The deeper members of a family (ir_100, ir_se_100, sphereface36/64, seqface_resnet64) stack the same
blocks as the one tested here, so they convert the same way.
"""
import os

import keras
import numpy as np
import pytest

import tfface
import tfface_align
from tests.test_export import warm_embedder
from tfface.export import tflite
from tfface.core.images import load, resize

# Smallest input each family accepts (tiny inputs keep the battery cheap); default 32x32.
SIZES = {"inception_resnet_v1": 80, "seqface_resnet27": 48}
FAMILIES = ("inception_resnet_v1", "ir_50", "ir_se_50", "mobilefacenet", "seqface_resnet27", "sphereface20")
PHOTOS = ("img12.jpg", "img25.jpg")


@pytest.fixture(scope="module")
def aligned(faces_dir):
    """ArcFace-aligned 112x112 faces of two real photos (uint8)."""
    detector = tfface_align.MTCNN(min_face_size=40)
    faces = []
    for name in PHOTOS:
        image = load(os.path.join(faces_dir, name))
        found = detector.detect(image)
        faces.append(tfface_align.align(image, found.landmarks[0], "arcface"))
    return np.stack(faces)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", FAMILIES)
def test_tflite_matches_keras(backbone, aligned, tmp_path):
    side = SIZES.get(backbone, 32)
    embedder = warm_embedder(backbone, (side, side), 16, "fixed_image_standardization")  # BN statistics set
    faces = resize(aligned, (side, side)).numpy()
    expected = keras.ops.convert_to_numpy(embedder(faces.astype(np.float32), training=False))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    paths = tflite.export_tflite(embedder, str(tmp_path))
    cosines = {}
    for quantization, path in paths.items():
        assert path == os.path.join(str(tmp_path), "tflite", tflite.FILES[quantization])
        cosines[quantization] = float((tflite.run_tflite(path, faces) * expected).sum(1).min())
    print(f"\n| {backbone} | {side}x{side} | {cosines['float32']:.6f} | {cosines['int8']:.4f} |")
    assert cosines["float32"] >= 0.999 and cosines["int8"] >= 0.99
    with pytest.raises(tfface.core.errors.UserError, match="expected uint8"):
        tflite.run_tflite(paths["float32"], faces.astype(np.float32))
    keras.backend.clear_session()

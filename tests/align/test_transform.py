"""Similarity transforms, template alignment and facenet crops: NumPy and TF agree, and both
match independent references."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from tfface_align import (ARCFACE_TEMPLATE, SPHEREFACE_TEMPLATE, align, align_tf, crop, crop_tf,
                          similarity_transform, similarity_transform_tf)
from tfface_align.transform import crop_box, seqface_matrix, seqface_matrix_tf, template_points


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _lstsq_reference(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent reference: the similarity [[a, -b, tx], [b, a, ty]] is linear in (a, b, tx, ty),
    so least squares is one linear solve."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_templates():
    assert ARCFACE_TEMPLATE.shape == (5, 2)
    np.testing.assert_allclose(SPHEREFACE_TEMPLATE, ARCFACE_TEMPLATE - [8, 0])
    points, size = template_points("sphereface")
    assert size == (112, 96)
    points, size = template_points("arcface", 224)
    np.testing.assert_allclose(points, ARCFACE_TEMPLATE * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="template"):
        template_points("vggface")


def test_identity_on_template():
    np.testing.assert_allclose(similarity_transform(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    tf_matrix = similarity_transform_tf(ARCFACE_TEMPLATE[None], ARCFACE_TEMPLATE).numpy()[0]
    np.testing.assert_allclose(tf_matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-5)


@pytest.mark.parametrize("angle,scale,tx,ty", [(0.3, 1.7, -20.0, 35.5), (-2.5, 0.4, 100.0, -3.0),
                                               (np.pi, 1.0, 0.0, 0.0)])
def test_known_similarity_is_recovered_exactly(angle, scale, tx, ty):
    truth = _similarity(angle, scale, tx, ty)
    src = ARCFACE_TEMPLATE.astype(np.float64) * 3 + 11
    dst = _apply(truth, src)
    np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-9)
    got = similarity_transform_tf(src[None].astype(np.float32), dst.astype(np.float32)).numpy()[0]
    np.testing.assert_allclose(got, truth, atol=2e-3 * max(1, abs(tx), abs(ty)))


def test_noisy_points_match_least_squares_reference():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 300, (5, 2))
    dst = _apply(_similarity(0.4, 0.6, 10, 20), src) + rng.normal(0, 2.0, (5, 2))
    reference = _lstsq_reference(src, dst)
    np.testing.assert_allclose(similarity_transform(src, dst), reference, atol=1e-9)
    batch = np.stack([src, src[::-1]]).astype(np.float32)  # batched: the second is a relabelling
    got = similarity_transform_tf(batch, dst.astype(np.float32)).numpy()
    np.testing.assert_allclose(got[0], reference, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[1], _lstsq_reference(src[::-1], dst), rtol=1e-4, atol=1e-3)


def test_no_reflection():
    src = ARCFACE_TEMPLATE.astype(np.float64)
    mirrored = src * [-1, 1]  # only a reflection maps src onto this exactly
    for matrix in (similarity_transform(src, mirrored),
                   similarity_transform_tf(src[None].astype(np.float32), mirrored.astype(np.float32)).numpy()[0]):
        assert np.linalg.det(matrix[:, :2]) > 0


def _face_image(faces_dir: str) -> np.ndarray:
    return cv2.imread(os.path.join(faces_dir, "img25.jpg"))[:, :, ::-1].copy()


def test_align_template_points_is_identity(faces_dir):
    image = cv2.resize(_face_image(faces_dir), (112, 112))
    np.testing.assert_array_equal(align(image, ARCFACE_TEMPLATE, "arcface"), image)
    out = align_tf(image, ARCFACE_TEMPLATE[None], "arcface").numpy()[0]
    np.testing.assert_allclose(out, image, atol=1e-3)


def test_align_undoes_a_known_similarity(faces_dir):
    image = cv2.resize(_face_image(faces_dir), (112, 112))
    truth = _similarity(0.5, 1.8, 120.0, 10.0)  # keeps the whole face inside the 320x300 canvas
    warped = cv2.warpAffine(image, truth, (320, 300), flags=cv2.INTER_LINEAR)
    landmarks = _apply(truth, ARCFACE_TEMPLATE.astype(np.float64))  # where the template points went
    back = align(warped, landmarks, "arcface")
    inner = (slice(10, 102), slice(10, 102))
    assert np.abs(back[inner].astype(float) - image[inner]).mean() < 4.0  # two bilinear resamplings
    back_tf = align_tf(warped, landmarks[None], "arcface").numpy()[0]
    assert np.abs(back_tf - back).max() <= 2.0


@pytest.mark.parametrize("template,size", [("arcface", None), ("sphereface", None), ("arcface", (128, 128)), ("seqface", None)])
def test_align_numpy_and_tf_agree(faces_dir, template, size):
    image = _face_image(faces_dir)
    landmarks = np.array([[[174, 164], [238, 163], [207, 203], [180, 240], [235, 239]],
                          [[100, 90], [160, 110], [120, 150], [90, 180], [140, 200]]], np.float32)
    got = align_tf(image, landmarks, template, size).numpy()
    for face, out in zip(landmarks, got):
        expected = align(image, face, template, size)
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() <= 1.0  # OpenCV's fixed-point weights
        assert np.abs(out - expected).mean() < 0.5


def test_seqface_crop_follows_seqfaces_steps():
    """SeqFace (code/util.py align_box): rotate about the eye centre by the eye line's angle
    (cv2.getRotationMatrix2D), take the square of side 3 (d + 1) with the eye centre at
    (side / 2, side / 3), d the rotated eye-to-mouth height; then resize it to 144x144."""
    landmarks = np.array([[174.0, 164.0], [238.0, 171.0], [207.0, 203.0], [180.0, 240.0], [235.0, 246.0]])
    eye, mouth = landmarks[:2].mean(0), landmarks[3:].mean(0)
    degrees = np.degrees(np.arctan((landmarks[1, 1] - landmarks[0, 1]) / (landmarks[1, 0] - landmarks[0, 0])))
    rotation = cv2.getRotationMatrix2D((float(eye[0]), float(eye[1])), float(degrees), 1.0)
    rotated = _apply(rotation, landmarks)
    side = 3 * (_apply(rotation, mouth[None])[0, 1] - eye[1] + 1)
    corner = eye - [side / 2, side / 3]
    expected = (rotated - corner + 0.5) * 144 / side - 0.5  # crop pixel i -> resized (i + 0.5) k - 0.5
    matrix = seqface_matrix(landmarks)
    np.testing.assert_allclose(_apply(matrix, landmarks), expected, atol=1e-9)
    np.testing.assert_allclose(seqface_matrix_tf(landmarks[None].astype(np.float32)).numpy()[0], matrix, rtol=1e-4, atol=1e-3)
    assert abs(_apply(matrix, landmarks)[0, 1] - _apply(matrix, landmarks)[1, 1]) < 1e-9  # eyes level


def test_crop_box_is_facenets():
    # facenet: bb = [max(x1 - m/2, 0), max(y1 - m/2, 0), min(x2 + m/2, w), min(y2 + m/2, h)] as int32
    np.testing.assert_array_equal(crop_box([10.7, 50.2, 90.9, 120.5, 0.99], 44, 130, 100), [0, 28, 100, 130])
    np.testing.assert_array_equal(crop_box([30.7, 40.2, 60.9, 70.5], 10, 500, 500), [25, 35, 65, 75])


@pytest.mark.parametrize("margin,size", [(32, 160), (44, 182), (0, 40), (400, (120, 100))])
def test_crop_numpy_and_tf_agree(faces_dir, margin, size):
    image = _face_image(faces_dir)
    boxes = np.array([[124, 86, 286, 284, 1.0], [-20, 300, 60, 420, 0.9]], np.float32)
    got = crop_tf(image, boxes, margin, size).numpy()
    for box, out in zip(boxes, got):
        expected = crop(image, box, margin, size)
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() <= 1.0


def test_crop_is_the_resized_rectangle(faces_dir):
    image = _face_image(faces_dir)
    x1, y1, x2, y2 = crop_box([100, 120, 200, 220], 20, *image.shape[:2])
    np.testing.assert_array_equal(crop(image, [100, 120, 200, 220], 20, (y2 - y1, x2 - x1)), image[y1:y2, x1:x2])
    with pytest.raises(ValueError, match="outside"):
        crop(image, [1000, 1000, 1100, 1100], 0, 50)
    assert not crop_tf(image, np.array([[1000, 1000, 1100, 1100]], np.float32), 0, 50).numpy().any()

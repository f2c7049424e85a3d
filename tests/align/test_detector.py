"""The batched TF MTCNN: real photos, batches, mixed sizes, agreement with the `mtcnn` package,
and SavedModel export."""
from __future__ import annotations

import math
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests.align.helpers import jpeg_with_orientation


def _photo(faces_dir: str, name: str, longest: int | None = None) -> np.ndarray:
    image = cv2.imread(os.path.join(faces_dir, name))[:, :, ::-1]
    if longest:
        s = longest / max(image.shape[:2])
        image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _same_faces(a, b, min_iou=0.95, landmark_tol=0.03):
    assert len(a.boxes) == len(b.boxes)
    for box, marks in zip(a.boxes, a.landmarks):
        j = int(np.argmax([iou(box, other) for other in b.boxes]))
        assert iou(box, b.boxes[j]) >= min_iou
        assert np.abs(marks - b.landmarks[j]).max() <= landmark_tol * (box[2] - box[0])


def test_couple_has_two_faces(detector, faces_dir):
    faces = detector.detect(os.path.join(faces_dir, "couple.jpg"))
    assert faces.boxes.shape == (2, 5) and faces.landmarks.shape == (2, 5, 2)
    assert (faces.boxes[:, 4] > 0.95).all() and faces.boxes[0, 4] >= faces.boxes[1, 4]
    assert faces.boxes[0, 0] > faces.boxes[1, 2] or faces.boxes[1, 0] > faces.boxes[0, 2]  # side by side
    for box, marks in zip(faces.boxes, faces.landmarks):
        assert 150 < box[2] - box[0] < 1000
        inside = (marks[:, 0] > box[0]) & (marks[:, 0] < box[2]) & (marks[:, 1] > box[1]) & (marks[:, 1] < box[3])
        assert inside.all()
        assert marks[:2, 1].max() < marks[2, 1] < marks[3:, 1].min()  # eyes above nose above mouth


@pytest.mark.parametrize("name", ["img25.jpg", "couple.jpg", "img5.jpg"])
def test_agrees_with_mtcnn_package(detector, reference_mtcnn, faces_dir, name):
    image = _photo(faces_dir, name, longest=640)
    ours = detector.detect(image)
    theirs = reference_mtcnn.detect_faces(image, threshold_onet=0.7, fit_to_image=False, box_format="xyxy")
    confident = [t for t in theirs if t["confidence"] >= 0.9]
    assert confident
    assert len(ours.boxes) <= len(theirs) + 1
    for face in confident:
        box = np.array(face["box"], float)
        j = int(np.argmax([iou(box, b) for b in ours.boxes]))
        assert iou(box, ours.boxes[j]) >= 0.8
        k = face["keypoints"]
        marks = np.array([k["left_eye"], k["right_eye"], k["nose"], k["mouth_left"], k["mouth_right"]], float)
        assert np.abs(ours.landmarks[j] - marks).max() <= 0.03 * (box[2] - box[0]) + 1  # + rounding


def test_batch_and_mixed_sizes_match_single_images(detector, faces_dir):
    a = _photo(faces_dir, "img25.jpg")                      # 400x400
    b = _photo(faces_dir, "couple.jpg", longest=400)       # 400x278: padded with a in one batch
    c = _photo(faces_dir, "img12.jpg")                      # 415x560
    single = [detector.detect(x) for x in (a, b, c)]
    mixed = detector.detect([a, b, c])
    assert len(mixed) == 3
    for one, many in zip(single, mixed):
        # a and b share a padded batch: its pyramid levels are resized from the padded size,
        # a slightly different sampling grid, so boxes move a little.
        _same_faces(one, many, min_iou=0.85, landmark_tol=0.05)
    np.testing.assert_allclose(mixed[2].boxes, single[2].boxes, rtol=1e-5, atol=1e-3)  # c alone
    batch = detector.detect(np.stack([a, a[:, ::-1]]))      # equal sizes: one (2, H, W, 3) array
    np.testing.assert_allclose(batch[0].boxes, single[0].boxes, rtol=1e-4, atol=1e-2)
    x1, y1, x2, y2, _ = batch[1].boxes[0]  # the mirrored photo: about the mirrored box
    assert iou(np.array([a.shape[1] - x2, y1, a.shape[1] - x1, y2]), single[0].boxes[0]) > 0.8


def test_buckets_group_similar_sizes(detector):
    shapes = [(400, 400), (4000, 3000), (400, 380), (100, 100), (4000, 3000)]
    buckets = detector._buckets(shapes)
    assert sorted(i for b in buckets for i in b) == list(range(5))
    assert [0, 2] in [sorted(b) for b in buckets] and [3] in buckets
    for bucket in buckets:
        h = max(shapes[i][0] for i in bucket)
        w = max(shapes[i][1] for i in bucket)
        assert h * w * len(bucket) <= detector.max_batch_pixels or len(bucket) == 1


def test_inputs_of_every_kind(detector, faces_dir, tmp_path):
    face = _photo(faces_dir, "img25.jpg")
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_with_orientation(face, 6))
    upright = detector.detect(str(path))  # EXIF orientation applied when reading
    _same_faces(upright, detector.detect(face), min_iou=0.9, landmark_tol=0.05)
    _same_faces(detector.detect(path.read_bytes()), upright, min_iou=0.99)  # encoded bytes
    assert len(detector.detect([str(path), tf.constant(face)])) == 2  # a list of a path and a tensor
    grey = detector.detect(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    assert len(grey.boxes) == 1
    nothing = detector.detect(np.full((300, 200, 3), 128, np.uint8))
    assert nothing.boxes.shape == (0, 5) and nothing.landmarks.shape == (0, 5, 2)
    tiny = detector.detect(np.zeros((15, 15, 3), np.uint8))  # smaller than one pyramid level
    assert tiny.boxes.shape == (0, 5)


def test_scales_follow_the_original_pyramid(detector):
    # The original: start at 12 / min_face_size, multiply by factor while min side * scale >= 12.
    for height, width in [(400, 400), (1588, 2280), (30, 500), (19, 19)]:
        expected, scale = [], 12 / 20
        while min(height, width) * scale >= 12:
            expected.append(scale)
            scale *= 0.709
        np.testing.assert_allclose(detector.scales(height, width), expected, rtol=1e-9)


def test_saved_model_round_trip(detector, faces_dir, tmp_path):
    image = _photo(faces_dir, "couple.jpg", longest=500)
    module = detector.as_module()
    tf.saved_model.save(module, str(tmp_path / "mtcnn"), signatures={"serving_default": module.detect})
    loaded = tf.saved_model.load(str(tmp_path / "mtcnn"))
    out = loaded.signatures["serving_default"](image=tf.constant(image))
    expected = detector.detect(image)
    np.testing.assert_allclose(out["boxes"].numpy(), expected.boxes, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(out["landmarks"].numpy(), expected.landmarks, rtol=1e-4, atol=1e-2)
    direct = loaded.detect(tf.constant(image[:300, :250]))  # another size, same function
    assert direct["boxes"].shape[1] == 5 and not math.isnan(float(tf.reduce_sum(direct["boxes"])))


def _reference_suppression(boxes, scores, batch, threshold, smaller):
    """Plain loops: keep a box unless a higher-scored box of its image overlaps it too much."""
    kept = []
    for j in range(len(boxes)):
        drop = False
        for i in range(len(boxes)):
            if i == j or batch[i] != batch[j] or scores[i] < scores[j] or (scores[i] == scores[j] and i < j):
                continue
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (boxes[i], boxes[j])]
            overlap = w * h / (min(area) if smaller else area[0] + area[1] - w * h)
            drop = drop or overlap > threshold
        if not drop:
            kept.append(j)
    return sorted(kept, key=lambda j: (-scores[j], -j))


@pytest.mark.parametrize("smaller", [False, True])
def test_suppression_rule_matches_loops(smaller):
    from tfface_align.mtcnn.detector import _suppress_by_any

    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 60, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (300, 2))], 1).astype(np.float32)
    scores = rng.choice([0.7, 0.8, 0.9, 0.95, 1.0], 300).astype(np.float32)  # with ties
    batch = rng.integers(0, 3, 300).astype(np.int32)
    keep = _suppress_by_any(tf.constant(boxes), tf.constant(scores), tf.constant(batch), tf.constant(500.0),
                            0.5, smaller, chunk=37).numpy()
    assert keep.tolist() == _reference_suppression(boxes, scores, batch, 0.5, smaller)


def _reference_greedy(boxes, scores, threshold):
    """Greedy NMS in NumPy: by decreasing score, keep a box unless a kept box overlaps it too much."""
    kept = []
    for j in np.argsort(-scores, kind="stable"):
        w = np.maximum(0.0, np.minimum(boxes[kept, 2], boxes[j, 2]) - np.maximum(boxes[kept, 0], boxes[j, 0]))
        h = np.maximum(0.0, np.minimum(boxes[kept, 3], boxes[j, 3]) - np.maximum(boxes[kept, 1], boxes[j, 1]))
        areas = (boxes[kept, 2] - boxes[kept, 0]) * (boxes[kept, 3] - boxes[kept, 1])
        iou = w * h / (areas + (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]) - w * h)
        if not (iou > threshold).any():
            kept.append(int(j))
    return kept


@pytest.mark.parametrize("images", [1, 3])
def test_greedy_suppression_is_per_image(images):
    from tfface_align.mtcnn.detector import _batched_nms

    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 60, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (200, 2))], 1).astype(np.float32)
    scores = rng.permutation(200).astype(np.float32) / 200  # distinct
    batch = rng.integers(0, images, 200).astype(np.int32)
    keep = _batched_nms(tf.constant(boxes), tf.constant(scores), tf.constant(batch), tf.constant(images), 0.5)
    expected = []
    for b in range(images):  # boxes of different images never suppress each other
        members = np.flatnonzero(batch == b)
        expected += members[_reference_greedy(boxes[members], scores[members], 0.5)].tolist()
    assert keep.numpy().tolist() == expected


def test_any_suppression_mode(detector, reference_mtcnn, faces_dir):
    from tfface_align import MTCNN

    image = _photo(faces_dir, "img24.jpg", longest=640)
    any_rule = MTCNN(nms="any").detect(image)
    _same_faces(any_rule, detector.detect(image), min_iou=0.9, landmark_tol=0.03)
    # The mtcnn package's own rule reproduces its boxes to its rounding (whole pixels).
    theirs = reference_mtcnn.detect_faces(image, threshold_onet=0.7, fit_to_image=False, box_format="xyxy")
    np.testing.assert_allclose(any_rule.boxes[:, :4], [t["box"] for t in theirs], atol=1.0)
    with pytest.raises(ValueError, match="nms"):
        MTCNN(nms="soft")


def test_detect_and_align_in_graph(detector, faces_dir):
    from tfface_align import align, crop

    image = _photo(faces_dir, "couple.jpg", longest=500)
    fn = tf.function(lambda x: detector.detect_and_align_graph(x, "arcface"))
    faces, boxes, landmarks = (t.numpy() for t in fn(tf.constant(image)))
    assert faces.shape == (2, 112, 112, 3)
    for face, marks in zip(faces, landmarks):
        assert np.abs(face - align(image, marks, "arcface")).max() <= 1.0
    crops, boxes, _ = (t.numpy() for t in detector.detect_and_align_graph(tf.constant(image), "facenet_crop",
                                                                          160, 20))
    assert np.abs(crops[0] - crop(image, boxes[0], 20, 160)).max() <= 1.0


@pytest.mark.parametrize("preset, expected", [(None, "8192"), ("100", "100")])
def test_import_raises_onednn_kernel_cache_unless_set(preset, expected):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if preset:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = preset
    code = "import os, tfface_align; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == expected

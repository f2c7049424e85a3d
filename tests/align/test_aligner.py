"""The shared per-photo alignment library (used by align_dataset_mtcnn and beam_align)."""
from __future__ import annotations

import os

import numpy as np

from tfface_align import ARCFACE_TEMPLATE
from tfface_align.aligner import align_faces, align_photos, face_example
from tfface_align.image_io import load_photo


def test_align_faces_main_face_template_and_scale():
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)
    # Face 1 is the template itself scaled x1.5 around (150, 100): centred, larger -> the main face.
    marks1 = (ARCFACE_TEMPLATE - 56) * 1.5 + [150, 100]
    marks0 = ARCFACE_TEMPLATE * 0.5 + [5, 5]
    boxes = np.array([[5, 5, 61, 61, 0.99], [66, 16, 234, 184, 0.98]], np.float32)
    faces = align_faces(image, boxes, np.stack([marks0, marks1]), "arcface", scale=2.0)
    assert len(faces) == 1 and faces[0].index == 0 and faces[0].image.shape == (112, 112, 3)
    np.testing.assert_allclose(faces[0].landmarks, ARCFACE_TEMPLATE, atol=1e-3)
    np.testing.assert_allclose(faces[0].box, boxes[1, :4] * 2.0)
    np.testing.assert_array_equal(faces[0].rect, np.round(boxes[1, :4]).astype(np.int64) * 2)
    # Every face with detect_multiple_faces; facenet_crop landmarks are in crop pixels.
    faces = align_faces(image, boxes, np.stack([marks0, marks1]), "facenet_crop", image_size=64, margin=0,
                        detect_multiple_faces=True)
    assert [f.index for f in faces] == [0, 1] and faces[0].image.shape == (64, 64, 3)
    np.testing.assert_allclose(faces[0].landmarks, (marks0 - 5) * 64 / 56, atol=1e-3)
    example = face_example(faces[0], 3, "someone", "a/b.jpg")
    feature = example.features.feature
    assert feature["image/class/label"].int64_list.value[0] == 3
    assert feature["image/encoded"].bytes_list.value[0].startswith(b"\x89PNG")


def test_align_photos_keeps_order_and_reports_unreadable(detector, faces_dir, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    photos = [load_photo(str(bad)), load_photo(os.path.join(faces_dir, "img1.jpg"))]
    results = align_photos(photos, detector, "sphereface")
    assert [r.status for r in results] == ["not_an_image", "ok"]
    assert results[0].faces == [] and results[1].faces[0].image.shape == (112, 96, 3)

"""Evaluation fixtures: a tiny exported model and face crops of the real photos."""
from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest

import tfface
from tfface.core import images
from tfface.export import export_saved_model

CROP = (64, 64)


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory) -> str:
    """A tiny MobileFaceNet (32x32 -> 16-D, BatchNorm statistics from real activations) exported
    as if trained on ArcFace-aligned faces."""
    embedder = tfface.models.build_embedder("mobilefacenet", (32, 32), 16, "minus_one_to_one")
    warmup = np.random.default_rng(9).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    for _ in range(20):
        embedder(warmup, training=True)
    alignment = {"align": "arcface", "image_size": [112, 112], "margin": 0.0}  # how compare aligns photos
    return export_saved_model(embedder, str(tmp_path_factory.mktemp("export")), "faces", alignment=alignment)


@pytest.fixture(scope="session")
def face_pairs(faces_dir) -> list[tuple[str, str, bool]]:
    """The labelled pairs of ``faces/pairs.csv``: (file, file, same person)."""
    with open(os.path.join(faces_dir, "pairs.csv")) as f:
        return [(row["file_x"], row["file_y"], row["Decision"] == "Yes") for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def face_crops(faces_dir, face_pairs) -> dict[str, bytes]:
    """Every photo named in the pairs, read through the image contract at 64x64, as JPEG bytes."""
    names = sorted({name for a, b, _ in face_pairs for name in (a, b)})
    crops = {}
    for name in names:
        pixels = images.load(os.path.join(faces_dir, name), CROP)
        crops[name] = cv2.imencode(".jpg", pixels[..., ::-1])[1].tobytes()  # cv2 encodes BGR
    return crops


@pytest.fixture(scope="session")
def ijb_mini(tmp_path_factory):
    """The synthetic IJB-C mini-release (tests/evaluation/ijb_mini.py): (its folder, the truth).
    Read-only: copy it before changing it."""
    from tests.evaluation.ijb_mini import make_mini_release

    root = str(tmp_path_factory.mktemp("ijb") / "IJBC")
    return root, make_mini_release(root)

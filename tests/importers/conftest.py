"""Fixtures of the dlib_resnet_v1 tests: the packaged model file and real 150 px chips cut by dlib
itself (HOG detector + 5-point predictor + ``get_face_chip``), with dlib's own descriptors."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

#: Photos of ../shared/testdata/faces whose chips and dlib descriptors the parity tests use.
NUM_PHOTOS = 8
MAX_SIDE = 800


@pytest.fixture(scope="session")
def dlib_model_path() -> str:
    from tfface.core.errors import UserError
    from tfface.importers import dlib_resnet

    try:
        return dlib_resnet.default_path()
    except UserError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def dlib_chips(dlib_model_path, faces_dir) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(chips uint8 (N, 150, 150, 3), dlib's descriptors float64 (N, 128), the N RGB photos they
    were cut from, downsized to ``MAX_SIDE``), N = faces found."""
    dlib = pytest.importorskip("dlib")
    import cv2

    models = os.path.dirname(dlib_model_path)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat"))
    chips, photos = [], []
    for path in sorted(glob.glob(os.path.join(faces_dir, "img*.jpg")))[:NUM_PHOTOS]:
        image = dlib.load_rgb_image(path)
        scale = MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = detector(image, 1)
        if found:
            chips.append(dlib.get_face_chip(image, predictor(image, found[0]), size=150, padding=0.25))
            photos.append(image)
    assert len(chips) >= NUM_PHOTOS - 2, "dlib found too few faces in the test photos"
    chips = np.stack(chips)
    reference = np.array(dlib.face_recognition_model_v1(dlib_model_path).compute_face_descriptor(list(chips)))
    return chips, reference, photos

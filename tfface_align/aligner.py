"""Per-photo detection + alignment: the logic every aligning entry point shares.

``align_dataset_mtcnn`` (a folder tree on one machine), ``beam_align`` (an Apache Beam pipeline)
and aligned inference call :func:`align_photos` (a batch of loaded photos → aligned faces) or
:func:`align_faces` (one photo whose faces are already detected), so a face is cut the same way
everywhere:

    from tfface_align import MTCNN, load_photo
    from tfface_align.aligner import align_photos

    results = align_photos([load_photo(p) for p in paths], MTCNN(), alignment="arcface")
    for result in results:            # one PhotoResult per photo, in order
        for face in result.faces:     # AlignedFace: image (112, 112, 3) uint8, landmarks, box, rect
            ...
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

from tfface.core.errors import check_choice, check_positive
from tfface_align.image_io import Photo
from tfface_align.transform import align, alignment_matrix, crop, crop_box

ALIGNMENTS = ("facenet_crop", "arcface", "sphereface", "seqface", "dlib")


class AlignedFace(NamedTuple):
    """One aligned face of a photo.

    ``image``: RGB uint8 (h, w, 3). ``landmarks``: (5, 2) in ``image`` pixels. ``box``: the
    detection box (x1, y1, x2, y2) in original-photo pixels. ``rect``: facenet's integer rectangle
    of the face (box + margin for ``facenet_crop``, the rounded box otherwise), original pixels.
    ``index``: rank of the face among the detections (0 for the main face; names ``<photo>_<index>.png``
    with ``detect_multiple_faces``).
    """

    image: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray
    rect: np.ndarray
    index: int

    def png(self) -> bytes:
        """The aligned image encoded as PNG (lossless)."""
        return cv2.imencode(".png", cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR))[1].tobytes()


class PhotoResult(NamedTuple):
    """Outcome for one photo: ``status`` is ``"ok"`` (at least one face), ``"no_face"``, or the
    reason the photo could not be read (``empty``, ``not_an_image``, ``corrupt``, ``unreadable``,
    ``huge``, see :func:`tfface_align.image_io.load_photo`); ``notes`` are the load's conversions."""

    status: str
    faces: list[AlignedFace]
    notes: tuple[str, ...]


def output_size(alignment: str, image_size: int | None) -> tuple[int, int]:
    """(height, width) of the aligned images: 182 square for facenet_crop, 112 square for arcface,
    112x96 (width = 96/112 of ``image_size``) for sphereface, 144 square for seqface, 150 square for dlib."""
    check_choice(alignment, ALIGNMENTS, "align")
    if alignment in ("facenet_crop", "seqface"):
        side = image_size or (182 if alignment == "facenet_crop" else 144)
        return side, side
    if alignment == "dlib":
        side = image_size or 150
        return side, side
    side = image_size or 112
    return (side, side) if alignment == "arcface" else (side, int(round(side * 96 / 112)))


def main_face(boxes: np.ndarray, height: int, width: int) -> int:
    """facenet's choice among several faces: the largest box area minus twice the squared
    distance of the box centre from the photo centre."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    dy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    return int(np.argmax(area - 2.0 * (dx ** 2 + dy ** 2)))


def _warp(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray, alignment: str,
          size: tuple[int, int], margin: float):
    """Aligned crop, landmarks in its pixels, and facenet's integer rectangle of the face."""
    if alignment == "facenet_crop":
        x1, y1, x2, y2 = crop_box(box, margin, image.shape[0], image.shape[1])
        if x2 <= x1 or y2 <= y1:
            return None, None, None
        chip = crop(image, box, margin, size)
        marks = (landmarks - [x1, y1]) * [size[1] / (x2 - x1), size[0] / (y2 - y1)]
        return chip, marks, np.array([x1, y1, x2, y2])
    matrix, _ = alignment_matrix(landmarks, alignment, size)
    marks = landmarks @ matrix[:, :2].T + matrix[:, 2]
    return align(image, landmarks, alignment, size), marks, np.round(box[:4]).astype(np.int64)


def align_faces(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    alignment: str = "arcface",
    image_size: int | None = None,
    margin: float = 44,
    detect_multiple_faces: bool = False,
    scale: float = 1.0,
) -> list[AlignedFace]:
    """Aligns the detected faces of one RGB photo (only the main face unless
    ``detect_multiple_faces``). ``boxes`` (N, 4 or 5) and ``landmarks`` (N, 5, 2) are in ``image``
    pixels; ``scale`` (original pixels per ``image`` pixel, > 1 for a photo decoded downscaled)
    maps the returned ``box`` and ``rect`` back to the original photo. Faces whose facenet crop is
    empty are dropped."""
    size = output_size(alignment, image_size)
    check_positive(margin, "margin", allow_zero=True)
    boxes, landmarks = np.asarray(boxes), np.asarray(landmarks)
    if len(boxes) and not detect_multiple_faces:
        pick = main_face(boxes, image.shape[0], image.shape[1])
        boxes, landmarks = boxes[pick:pick + 1], landmarks[pick:pick + 1]
    faces = []
    for index, (box, marks) in enumerate(zip(boxes, landmarks)):
        chip, chip_marks, rect = _warp(image, box, marks, alignment, size, margin)
        if chip is not None:
            faces.append(AlignedFace(chip, np.asarray(chip_marks, np.float32),
                                     np.asarray(box[:4], np.float64) * scale,
                                     (np.asarray(rect) * scale).astype(np.int64), index))
    return faces


def align_photos(
    photos: Sequence[Photo],
    detector,
    alignment: str = "arcface",
    image_size: int | None = None,
    margin: float = 44,
    detect_multiple_faces: bool = False,
) -> list[PhotoResult]:
    """Detects (one batched detector call) and aligns a batch of photos loaded with
    :func:`tfface_align.image_io.load_photo`; one :class:`PhotoResult` per photo, in order.
    Unreadable photos get their load status and no faces; they never stop the batch.

    Args:
        photos: loaded photos (``image`` None for an unreadable one).
        detector: a :class:`tfface_align.MTCNN` (anything whose ``detect(list_of_images)`` returns
            per image ``(boxes, landmarks)``).
        alignment: ``facenet_crop``, ``arcface``, ``sphereface`` or ``dlib``.
        image_size: side of the aligned image (see :func:`output_size`).
        margin: facenet_crop margin in original-photo pixels (half on each side).
        detect_multiple_faces: keep every face, not only the main one.
    """
    good = [i for i, photo in enumerate(photos) if photo.image is not None]
    found = detector.detect([photos[i].image for i in good]) if good else []
    detections = dict(zip(good, found))
    results = []
    for i, photo in enumerate(photos):
        if photo.image is None:
            results.append(PhotoResult(photo.status, [], photo.notes))
            continue
        boxes, landmarks = detections[i]
        faces = align_faces(photo.image, boxes, landmarks, alignment, image_size, margin,
                            detect_multiple_faces, photo.scale)
        results.append(PhotoResult("ok" if faces else "no_face", faces, photo.notes))
    return results


def face_example(face: AlignedFace, label: int, class_name: str, source_id: str):
    """The ``tf.train.Example`` (tfface schema, PNG) of one aligned face."""
    from tfface.data.tfrecord import make_example

    height, width = face.image.shape[:2]
    return make_example(face.png(), label, height, width, image_format="png", text=class_name,
                        source_id=source_id, landmarks=face.landmarks, bbox=face.box)

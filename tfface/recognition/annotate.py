"""Pictures of results: faces boxed and labelled with names and distances (OpenCV), written atomically.

``facebank identify --annotate DIR`` draws every face of each photo with its name and distance,
``compare --annotate FILE`` puts the photos side by side with their main face boxed and each one's
distance to the first photo, and the annotated videos of ``infer_on_video`` draw the same boxes.
"""
from __future__ import annotations

import os
import uuid
from typing import Sequence

import cv2
import numpy as np

from tfface.core import images
from tfface.core.errors import UserError

KNOWN, UNKNOWN, NEUTRAL = (0, 200, 0), (0, 0, 255), (255, 160, 0)  # BGR
SHEET_HEIGHT = 240  # pixels: photo height in a compare sheet


def _label(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """``text`` on a filled box above (x, y), readable on any photo."""
    scale = max(0.4, min(image.shape[:2]) / 600)
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(y, height + base + 2)
    cv2.rectangle(image, (x, y - height - base - 2), (x + width + 2, y), colour, cv2.FILLED)
    cv2.putText(image, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_box(image: np.ndarray, box: Sequence[float], text: str, colour: tuple[int, int, int]) -> np.ndarray:
    """Draws ``box`` (x1, y1, x2, y2) and ``text`` above it on a BGR image (in place; returned)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, max(2, min(image.shape[:2]) // 200))
    _label(image, text, x1, y1, colour)
    return image


def draw_faces(image: np.ndarray, faces: Sequence) -> np.ndarray:
    """Boxes and ``name distance`` labels of recognised faces (``box``, ``name``, ``distance``;
    ``Unknown`` in red) on a BGR image (in place; returned)."""
    for face in faces:
        draw_box(image, face.box, f"{face.name} {face.distance:.2f}", UNKNOWN if face.name == "Unknown" else KNOWN)
    return image


def comparison_sheet(photos: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None],
                     distances: Sequence[float | None], same: Sequence[bool | None]) -> np.ndarray:
    """The RGB ``photos`` side by side at one height (BGR result), each face box labelled with the
    photo's number and ``distances`` (None: the reference photo) in the colour of ``same`` (green:
    same person, red: different, orange: None, no threshold); a photo whose box is None has no face."""
    tiles = []
    for index, (photo, box, dist, is_same) in enumerate(zip(photos, boxes, distances, same)):
        scale = SHEET_HEIGHT / photo.shape[0]
        tile = cv2.resize(cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), (max(1, round(photo.shape[1] * scale)), SHEET_HEIGHT),
                          interpolation=cv2.INTER_AREA)
        if box is None:
            _label(tile, f"{index}: no face", 2, SHEET_HEIGHT - 2, UNKNOWN)
        else:
            colour = NEUTRAL if is_same is None else KNOWN if is_same else UNKNOWN
            text = f"{index}" if dist is None else f"{index}: {dist:.2f}"
            draw_box(tile, [v * scale for v in box], text, colour)
        tiles.append(tile)
        tiles.append(np.full((SHEET_HEIGHT, 4, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def annotate_comparison(path: str, comparison, boxes: Sequence[Sequence[float] | None]) -> str:
    """Writes :func:`comparison_sheet` of a :class:`tfface.evaluation.comparison.Comparison` to
    ``path``; ``boxes`` per photo (None: no face found, or the whole photo for a photo that had a
    face but no detection, as with ``--noalign``)."""
    photos = [images.load(p) for p in comparison.paths]
    rows = np.cumsum(comparison.found) - 1  # row of each photo with a face in the distance matrix
    same = comparison.same() if comparison.threshold is not None else None
    sheet_boxes, distances, verdicts = [], [], []
    for photo, box, found, row in zip(photos, boxes, comparison.found, rows):
        if not found:
            sheet_boxes.append(None)
            distances.append(None)
            verdicts.append(None)
            continue
        sheet_boxes.append(box if box is not None else (0, 0, photo.shape[1] - 1, photo.shape[0] - 1))
        distances.append(None if row == 0 else float(comparison.distances[0, row]))  # row 0: the reference
        verdicts.append(None if same is None or row == 0 else bool(same[0, row]))
    return write_image(path, comparison_sheet(photos, sheet_boxes, distances, verdicts))


def write_image(path: str, image: np.ndarray) -> str:
    """Writes a BGR image to ``path`` (format from its suffix) atomically; returns ``path``."""
    suffix = os.path.splitext(path)[1].lower() or ".jpg"
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        raise UserError(f"--annotate: cannot write an image as '{suffix}' ({path}); use .jpg or .png")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}{suffix}"
    with open(tmp, "wb") as f:
        f.write(encoded.tobytes())
    os.replace(tmp, path)
    return path


def annotated_name(directory: str, photo: str, taken: set[str]) -> str:
    """``directory/<photo's name>.jpg``, numbered when two photos share a name."""
    stem = os.path.splitext(os.path.basename(photo))[0]
    name, n = f"{stem}.jpg", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.jpg"
    taken.add(name)
    return os.path.join(directory, name)

"""Faces in photos and frames -> aligned crops -> embeddings, the way the model was trained.

The facebank (:mod:`tfface.facebank`) and video recognition (:mod:`tfface.video`) share these:
detection with :class:`tfface_align.MTCNN`, alignment per ``Embedder.alignment`` (the model's
own record of how its training faces were made), and embedding with optional flip TTA.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

import tfface_align
from tfface import images
from tfface.errors import UserError
from tfface.inference import Embedder


def aligned_faces(embedder: Embedder, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The detected faces of one RGB ``image`` cut as the model's training faces were:
    uint8 (N, H, W, 3) at ``embedder.image_size``."""
    alignment = embedder.alignment
    if not alignment:
        raise UserError(f"model: '{embedder.path}' does not record how its training faces were aligned "
                        "(export it with an alignment) so faces cannot be cut the same way")
    size = tuple(alignment["image_size"])
    if alignment["align"] == "facenet_crop":
        chips = [tfface_align.crop(image, box, alignment.get("margin", 32), size) for box in boxes]
    else:
        chips = [tfface_align.align(image, marks, alignment["align"], size) for marks in landmarks]
    if not chips:
        return np.zeros((0, *embedder.image_size, 3), np.uint8)
    return np.asarray(images.resize(np.stack(chips), embedder.image_size))


def embed_faces(embedder: Embedder, faces: np.ndarray, flip: bool = True) -> np.ndarray:
    """L2-normalised embeddings (N, D) of aligned ``faces``; with ``flip``, of the sum of each
    face's and its mirror image's embeddings (MultiFace's test-time augmentation)."""
    if len(faces) == 0:
        return np.zeros((0, int(embedder.metadata.get("embedding_size", 0))), np.float32)
    embeddings = embedder.embed(faces)
    if flip:
        embeddings = embeddings + embedder.embed(np.ascontiguousarray(faces[:, :, ::-1]))
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


class PhotoEmbeddings(NamedTuple):
    """Embeddings (M, D) of the photos that had a face; ``used`` their indices in the input,
    ``skipped`` (photo, reason) for the others."""

    embeddings: np.ndarray
    used: list[int]
    skipped: list[tuple[str, str]]


def embed_photos(embedder: Embedder, detector: tfface_align.MTCNN, photos: Sequence[str | np.ndarray],
                 flip: bool = True, batch_size: int = 32) -> PhotoEmbeddings:
    """Embeds the main face (facenet's choice: large and central) of every photo (a path or an RGB
    array); unreadable photos and photos without a face are skipped and reported, never embedded."""
    embeddings, used, skipped = [], [], []
    for start in range(0, len(photos), batch_size):
        chunk = list(photos[start:start + batch_size])
        loaded, where = [], []
        for offset, photo in enumerate(chunk):
            try:
                loaded.append(images.load(photo) if isinstance(photo, str) else np.asarray(photo, np.uint8))
                where.append(start + offset)
            except UserError as err:
                skipped.append((_label(photo, start + offset), f"unreadable ({err})"))
        for index, image, found in zip(where, loaded, detector.detect(loaded) if loaded else []):
            if len(found.boxes) == 0:
                skipped.append((_label(photos[index], index), "no face found"))
                continue
            pick = main_face(found.boxes, *image.shape[:2])
            chip = aligned_faces(embedder, image, found.boxes[pick:pick + 1], found.landmarks[pick:pick + 1])
            embeddings.append(embed_faces(embedder, chip, flip))
            used.append(index)
    dim = int(embedder.metadata.get("embedding_size", 0))
    return PhotoEmbeddings(np.concatenate(embeddings) if embeddings else np.zeros((0, dim), np.float32), used, skipped)


def main_face(boxes: np.ndarray, height: int, width: int) -> int:
    """facenet's choice among several faces: the largest box area minus twice the squared
    distance of the box centre from the photo centre."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    dy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    return int(np.argmax(area - 2.0 * (dx ** 2 + dy ** 2)))


def _label(photo, index: int) -> str:
    return photo if isinstance(photo, str) else f"image #{index}"

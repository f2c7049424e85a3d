"""Faces in photos and frames -> aligned crops -> embeddings, the way the model was trained.

The facebank (:mod:`tfface.recognition.facebank`) and video recognition (:mod:`tfface.recognition.video`) share these:
detection with :class:`tfface_align.MTCNN`, alignment per ``Embedder.alignment`` (the model's
own record of how its training faces were made), and embedding with optional flip TTA.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

import tfface_align
from tfface.core import images
from tfface.recognition.inference import Embedder
from tfface_align.aligner import align_faces


def _model_size(embedder: Embedder, chips: Sequence[np.ndarray]) -> np.ndarray:
    """Aligned faces as one uint8 batch at the model's input size."""
    if len(chips) == 0:
        return np.zeros((0, *embedder.image_size, 3), np.uint8)
    return np.asarray(images.resize(np.stack(chips), embedder.image_size))


def aligned_faces(embedder: Embedder, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray
                  ) -> tuple[np.ndarray, list[int]]:
    """The detected faces of one RGB ``image`` cut as the model's training faces were: uint8
    (M, H, W, 3) at ``embedder.image_size``, and the index among ``boxes`` of each (a facenet
    crop that falls outside the image is dropped)."""
    kind, side, margin = embedder.alignment_settings()
    faces = align_faces(image, boxes, landmarks, kind, side, margin, detect_multiple_faces=True)
    return _model_size(embedder, [face.image for face in faces]), [face.index for face in faces]


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
    faces, found, skipped = embedder.align_files(photos, batch_size, detector)[:3]
    return PhotoEmbeddings(embed_faces(embedder, _model_size(embedder, faces), flip),
                           [int(i) for i in np.flatnonzero(found)], skipped)

"""Using an exported tfface model: load a SavedModel, embed faces and face files.

    embedder = tfface.load_embedder("runs/quickstart")   # version, model or run directory
    embeddings = embedder.embed_files(["a.jpg", "b.jpg"])  # L2-normalised (2, D)

Files are read through the image contract (:mod:`tfface.images`), exactly as training and the
SavedModel's ``embed_encoded`` signature read them.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfface.errors import UserError
from tfface.evaluation.embeddings import embed_paths
from tfface.export import META_FILE


def resolve_saved_model(path: str) -> str:
    """Finds the SavedModel under ``path``: a version dir, a model dir (newest version), or a
    run dir (its ``export/<model>/<newest version>``)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    candidates = []
    for root, _, files in os.walk(path):
        if "saved_model.pb" in files and os.path.basename(root).isdigit():
            candidates.append(root)
    if not candidates:
        raise UserError(f"model: no SavedModel (saved_model.pb) found under '{path}'")
    return max(candidates, key=lambda p: (os.path.dirname(p), int(os.path.basename(p))))


def read_metadata(saved_model_dir: str) -> dict:
    """``assets.extra/tfface.json`` of an export ({} for a SavedModel tfface did not write)."""
    path = os.path.join(saved_model_dir, META_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


class Embedder:
    """A loaded tfface SavedModel: ``embed(uint8 images) -> L2-normalised embeddings``.

    Attributes:
        path: the version directory loaded.
        image_size: (height, width) of the faces the model takes.
        standardization: the model's in-graph standardization.
        metadata: the export's ``tfface.json`` (backbone, embedding size, alignment, fingerprint).
    """

    def __init__(self, saved_model_dir: str):
        self.path = resolve_saved_model(saved_model_dir)
        self._model = tf.saved_model.load(self.path)
        self._embed = self._model.signatures["serving_default"]
        self.metadata = read_metadata(self.path)
        self.image_size = tuple(int(v) for v in self._model.image_size.numpy())
        self.standardization = self._model.standardization.numpy().decode()

    @property
    def fingerprint(self) -> str | None:
        """The model's fingerprint (weights + how it reads faces), None for exports without one."""
        return self.metadata.get("fingerprint")

    @property
    def alignment(self) -> dict | None:
        """How the training faces were aligned (``align``, ``image_size``, ``margin``), if known."""
        return self.metadata.get("alignment")

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (B, H, W, 3) at :attr:`image_size` -> (B, D) float32."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:3] != self.image_size or images.dtype != np.uint8:
            raise ValueError(
                f"images: expected uint8 (B, {self.image_size[0]}, {self.image_size[1]}, 3), "
                f"got {images.dtype} {images.shape}"
            )
        return self._embed(images=tf.constant(images))["embeddings"].numpy()

    def embed_files(self, paths: Sequence[str], batch_size: int = 100) -> np.ndarray:
        """Reads, resizes and embeds image files (see :func:`tfface.evaluation.embed_paths`)."""
        return embed_paths(self.embed, list(paths), self.image_size, batch_size)


def load_embedder(saved_model_dir: str) -> Embedder:
    """Loads an exported tfface SavedModel (version, model or run directory)."""
    return Embedder(saved_model_dir)

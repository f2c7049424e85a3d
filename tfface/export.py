"""Export an embedder as a SavedModel in TF Serving's layout, and load it back.

``<export_base>/<model_name>/<version>/`` holds a SavedModel with two signatures:

* ``serving_default``: ``images`` uint8 (B, H, W, 3) -> ``embeddings`` float32 (B, D),
  L2-normalised;
* ``embed_encoded``: ``encoded`` string (B,) JPEG/PNG bytes -> the same (decoded and resized
  to the model's size in the graph).

The model's standardization is inside the graph, so a client can only send raw pixels. The
image size, standardization and backbone are stored as variables of the SavedModel and in
``assets.extra/tfface.json``. A version directory appears atomically (saved under a
temporary name, then renamed).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf

from tfface.errors import UserError
from tfface.evaluation.embeddings import embed_paths

META_FILE = os.path.join("assets.extra", "tfface.json")


class _EmbeddingModule(tf.Module):
    def __init__(self, embedder: keras.Model, meta: dict):
        super().__init__()
        self.embedder = embedder
        height, width = meta["image_size"]
        # Variables (not constants) so that they are saved with the SavedModel.
        self.image_size = tf.Variable(meta["image_size"], trainable=False, dtype=tf.int32, name="image_size")
        self.standardization = tf.Variable(meta["standardization"], trainable=False, name="standardization")
        self.backbone = tf.Variable(meta["backbone"], trainable=False, name="backbone")

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")])
        def embed_images(images):
            embeddings = self.embedder(tf.cast(images, tf.float32), training=False)
            return {"embeddings": tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded")])
        def embed_encoded(encoded):
            def decode(data):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                image = tf.image.resize(image, (height, width), antialias=True)
                return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

            images = tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))
            return embed_images(images)

        self.embed_images = embed_images
        self.embed_encoded = embed_encoded


def embedder_metadata(embedder: keras.Model) -> dict:
    """Image size, standardization, backbone and embedding size recorded in an embedder."""
    _, height, width, _ = embedder.input_shape
    standardize = embedder.get_layer("standardize")
    return {
        "image_size": [int(height), int(width)],
        "standardization": standardize.standardization,
        "backbone": embedder.name.removesuffix("_embedder"),
        "embedding_size": int(embedder.output_shape[-1]),
    }


def export_saved_model(embedder: keras.Model, export_base: str, model_name: str, version: int | None = None) -> str:
    """Writes ``export_base/model_name/<version>`` (next free integer when None); returns it."""
    model_dir = os.path.join(export_base, model_name)
    os.makedirs(model_dir, exist_ok=True)
    if version is None:
        existing = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
        version = max(existing, default=0) + 1
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise UserError(f"export: version directory '{final}' already exists")
    meta = embedder_metadata(embedder)
    module = _EmbeddingModule(embedder, meta)
    tmp = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(
            module, tmp,
            signatures={"serving_default": module.embed_images, "embed_encoded": module.embed_encoded},
        )
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


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


class Embedder:
    """A loaded tfface SavedModel: ``embed(uint8 images) -> L2-normalised embeddings``."""

    def __init__(self, saved_model_dir: str):
        self.path = resolve_saved_model(saved_model_dir)
        self._model = tf.saved_model.load(self.path)
        self._embed = self._model.signatures["serving_default"]
        self.image_size = tuple(int(v) for v in self._model.image_size.numpy())
        self.standardization = self._model.standardization.numpy().decode()

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (B, H, W, 3) at :attr:`image_size` -> (B, D) float32."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:3] != self.image_size or images.dtype != np.uint8:
            raise ValueError(
                f"images: expected uint8 (B, {self.image_size[0]}, {self.image_size[1]}, 3), "
                f"got {images.dtype} {images.shape}"
            )
        return self._embed(images=tf.constant(images))["embeddings"].numpy()

    def embed_files(self, paths, batch_size: int = 100) -> np.ndarray:
        """Reads, resizes and embeds image files (see :func:`tfface.evaluation.embed_paths`)."""
        return embed_paths(self.embed, list(paths), self.image_size, batch_size)


def load_embedder(saved_model_dir: str) -> Embedder:
    """Loads an exported tfface SavedModel (version, model or run directory)."""
    return Embedder(saved_model_dir)

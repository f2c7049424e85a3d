"""Export an embedder as a SavedModel in TF Serving's layout, and load it back.

``<export_base>/<model_name>/<version>/`` holds a SavedModel with two signatures:

* ``serving_default``: ``images`` uint8 (B, H, W, 3) -> ``embeddings`` float32 (B, D),
  L2-normalised;
* ``embed_encoded``: ``encoded`` string (B,) JPEG/PNG bytes -> the same (decoded and resized
  to the model's size in the graph).

The model's standardization is inside the graph, so a client can only send raw pixels; encoded
images go through the image contract (:mod:`tfface.images`). The image size, standardization
and backbone are stored as variables of the SavedModel; those, the alignment the training faces
were made with and the model's fingerprint are in ``assets.extra/tfface.json``. A version
directory appears atomically (saved under a temporary name, then renamed). Loading:
:mod:`tfface.inference`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf

from tfface import images
from tfface.errors import UserError

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
                return images.resize(images.decode(data), (height, width))

            faces = tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))
            return embed_images(faces)

        self.embed_images = embed_images
        self.embed_encoded = embed_encoded


def model_fingerprint(embedder: keras.Model, meta: dict) -> str:
    """A hash of the embedder's weights and of how it reads faces (``meta`` without fingerprint).

    Artifacts computed from a model's embeddings (classifiers, thresholds, facebanks) store it
    and refuse a model whose fingerprint differs.
    """
    digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "fingerprint"}, sort_keys=True).encode())
    for weight in embedder.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight), np.float32).tobytes())
    return digest.hexdigest()[:32]


def embedder_metadata(embedder: keras.Model, alignment: dict | None = None) -> dict:
    """What an exported model records about itself (``assets.extra/tfface.json``).

    Image size, standardization, backbone, embedding size, the alignment its training faces were
    made with (``{"align": "arcface"|"sphereface"|"facenet_crop", "image_size": [h, w],
    "margin": m}``, or None when unknown) and the fingerprint of all of it plus the weights.
    """
    _, height, width, _ = embedder.input_shape
    standardize = embedder.get_layer("standardize")
    meta = {
        "image_size": [int(height), int(width)],
        "standardization": standardize.standardization,
        "backbone": embedder.name.removesuffix("_embedder"),
        "embedding_size": int(embedder.output_shape[-1]),
        "alignment": alignment,
    }
    meta["fingerprint"] = model_fingerprint(embedder, meta)
    return meta


def export_saved_model(
    embedder: keras.Model, export_base: str, model_name: str, version: int | None = None, alignment: dict | None = None
) -> str:
    """Writes ``export_base/model_name/<version>`` (next free integer when None); returns it.

    ``alignment``: how the training faces were aligned (see :func:`embedder_metadata`).
    """
    model_dir = os.path.join(export_base, model_name)
    os.makedirs(model_dir, exist_ok=True)
    if version is None:
        existing = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
        version = max(existing, default=0) + 1
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise UserError(f"export: version directory '{final}' already exists")
    meta = embedder_metadata(embedder, alignment)
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

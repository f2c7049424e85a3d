"""Export an embedder as a SavedModel that TF Serving runs, in its versioned layout.

``<export_base>/<model_name>/<version>/`` holds a SavedModel with these signatures
(B = batch, H x W = the model's image size, D = embedding size):

* ``serving_default``: ``images`` uint8 (B, H, W, 3) -> ``embeddings`` float32 (B, D), L2-normalised;
* ``embed_encoded``: ``encoded`` string (B,) JPEG/PNG/GIF/BMP bytes of aligned faces -> the same,
  decoded and resized to H x W in the graph by the image contract (:mod:`tfface.core.images`);
* ``embed_float``: ``images`` float32 (B, H, W, 3), already standardized -> the same;
* ``verify``: ``images_a``, ``images_b`` uint8 (B, H, W, 3) -> ``distance`` float32 (B,) between
  pair i's faces, and ``same`` bool (B,) when a calibrated ``threshold.json`` was exported with it.

The model's standardization is inside the graph, so a client sends raw pixels. Metadata (image
size, standardization, backbone, alignment, fingerprint) is in ``assets.extra/tfface.json``,
warm-up requests in ``assets.extra/tf_serving_warmup_requests``.

Why not ``tf.saved_model.save`` of a ``tf.Module`` holding the Keras model: TF Serving (like the
TF1 loader ``tf.compat.v1.saved_model.loader.load``) restores variables through the MetaGraph's
saver and then runs the signature's tensors, and a Keras 3 model tracked as a child object saves
its variables under paths the signature's captured resources are not bound to
("Could not find variable ..."). As Keras's own ``ExportArchive`` does, the root object here tracks
the very ``tf.Variable`` objects the signatures capture (:func:`save_serving_module`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfface.core import images
from tfface.core.errors import UserError
from tfface.core.preprocessing import get_standardization
from tfface.export import warmup
from tfface.export.versions import write_version

META_FILE = os.path.join("assets.extra", "tfface.json")
THRESHOLD_FILE = "threshold.json"
THRESHOLD_KEYS = ("distance_metric", "value", "far", "tar", "calibrated_on", "num_pairs", "fingerprint")
_TF_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")  # what tf.io.decode_image reads


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


def embedder_metadata(embedder: keras.Model, alignment: dict | None = None, source: dict | None = None) -> dict:
    """What an exported model records about itself (``assets.extra/tfface.json``).

    Image size, standardization, backbone, embedding size, the alignment its training faces were
    made with (``{"align": "arcface"|"sphereface"|"facenet_crop"|..., "image_size": [h, w],
    "margin": m}``, or None when unknown), for imported weights their ``source`` (file, SHA-256,
    format, licence: :class:`tfface.importers.Imported`), and the fingerprint of all of it plus
    the weights.
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
    if source is not None:
        meta["source"] = source
    meta["fingerprint"] = model_fingerprint(embedder, meta)
    return meta


def read_threshold(path: str, fingerprint: str) -> dict:
    """A ``threshold.json`` (file, or directory holding one) calibrated on this model.

    Raises:
        UserError: missing or malformed file, or calibrated on a model with another fingerprint.
    """
    if os.path.isdir(path):
        path = os.path.join(path, THRESHOLD_FILE)
    try:
        with open(path) as f:
            threshold = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"--threshold: cannot read '{path}' ({err})") from None
    if not isinstance(threshold, dict) or any(key not in threshold for key in THRESHOLD_KEYS):
        raise UserError(f"--threshold: '{path}' needs the keys {list(THRESHOLD_KEYS)}")
    if threshold["distance_metric"] not in (0, 1):
        raise UserError(f"--threshold: '{path}' has distance_metric {threshold['distance_metric']!r}, expected 0 or 1")
    if threshold["fingerprint"] != fingerprint:
        raise UserError(
            f"--threshold: '{path}' was calibrated on model {threshold['fingerprint']!r}, not on this one ({fingerprint})"
        )
    return threshold


def pair_distance(a: tf.Tensor, b: tf.Tensor, distance_metric: int) -> tf.Tensor:
    """facenet's distance between L2-normalised rows: 0 = squared Euclidean, 1 = angle / pi."""
    if distance_metric == 0:
        return tf.reduce_sum(tf.square(a - b), axis=1)
    cosine = tf.reduce_sum(a * b, axis=1) / (tf.norm(a, axis=1) * tf.norm(b, axis=1))
    return tf.acos(tf.clip_by_value(cosine, -1.0, 1.0)) / math.pi


def check_batch(tensor: tf.Tensor, name: str, image_size: tuple[int, int] | None = None) -> tf.Tensor:
    """``tensor``, once in-graph checks passed that its batch is not empty and, with
    ``image_size``, that its faces have that (height, width). TF Serving does not check a request's
    shape against the signature; without this a wrong size fails deep inside the backbone."""
    checks = [tf.debugging.assert_positive(tf.shape(tensor)[0], message=f"{name}: empty batch, send at least one element")]
    if image_size is not None:
        height, width = image_size
        checks.append(tf.debugging.assert_equal(
            tf.shape(tensor)[1:], [height, width, 3],
            message=f"{name}: expected faces of {height}x{width}x3 pixels (embed_encoded resizes encoded faces)"))
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def decode_checked(encoded: tf.Tensor, name: str) -> tf.Tensor:
    """:func:`tfface.core.images.decode`, after an in-graph check that the bytes are an image TF reads."""
    known = tf.reduce_any([tf.strings.substr(encoded, 0, len(m)) == m for m in _TF_MAGIC])
    with tf.control_dependencies([tf.debugging.Assert(known, [f"{name}: an element is not a JPEG/PNG/GIF/BMP image"])]):
        return images.decode(encoded)


def backbone_of(embedder: keras.Model) -> keras.Layer:
    """The embedder's backbone: the layer after its ``standardize`` layer (takes standardized floats)."""
    names = [layer.name for layer in embedder.layers]
    if "standardize" not in names or names.index("standardize") != len(names) - 2:
        raise UserError(f"model: expected pixels -> standardize -> backbone, got layers {names}")
    return embedder.layers[-1]


class EmbedderSignatures(tf.Module):
    """The serving signatures of an embedder (see the module docstring)."""

    def __init__(self, embedder: keras.Model, meta: dict, threshold: dict | None = None):
        super().__init__()
        height, width = meta["image_size"]
        # Read by tfface.recognition.inference.Embedder (variables, so that they are saved with the SavedModel).
        self.image_size = tf.Variable(meta["image_size"], trainable=False, dtype=tf.int32, name="image_size")
        self.standardization = tf.Variable(meta["standardization"], trainable=False, name="standardization")
        self.backbone = tf.Variable(meta["backbone"], trainable=False, name="backbone")
        backbone = backbone_of(embedder)
        metric = 0 if threshold is None else int(threshold["distance_metric"])

        def faces(name, dtype=tf.uint8):
            return tf.TensorSpec([None, height, width, 3], dtype, name=name)

        def normalized(embeddings):
            return tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)

        @tf.function(input_signature=[faces("images")])
        def serving_default(images):
            images = check_batch(images, "images", (height, width))
            return {"embeddings": normalized(embedder(tf.cast(images, tf.float32), training=False))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded")])
        def embed_encoded(encoded):
            encoded = check_batch(encoded, "encoded")

            def read(data):
                return images.resize(decode_checked(data, "encoded"), (height, width))

            pixels = tf.map_fn(read, encoded, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))
            return serving_default(pixels)  # a call of the traced graph, not a second trace

        @tf.function(input_signature=[faces("images", tf.float32)])
        def embed_float(images):
            images = check_batch(images, "images", (height, width))
            return {"embeddings": normalized(backbone(images, training=False))}

        @tf.function(input_signature=[faces("images_a"), faces("images_b")])
        def verify(images_a, images_b):
            pairs = tf.debugging.assert_equal(tf.shape(images_a)[0], tf.shape(images_b)[0],
                                              message="images_a, images_b: expected batches of the same size (pairs)")
            with tf.control_dependencies([pairs]):
                images_a = check_batch(images_a, "images_a", (height, width))
                images_b = check_batch(images_b, "images_b", (height, width))
            embeddings = serving_default(tf.concat([images_a, images_b], axis=0))["embeddings"]
            a, b = tf.split(embeddings, 2, axis=0)
            distance = pair_distance(a, b, metric)
            if threshold is None:
                return {"distance": distance}
            return {"distance": distance, "same": distance <= float(threshold["value"])}

        self.endpoints = {
            "serving_default": serving_default, "embed_encoded": embed_encoded,
            "embed_float": embed_float, "verify": verify,
        }

    def warmup_inputs(self, batch_size: int) -> dict[str, dict[str, np.ndarray]]:
        """A request's inputs per signature: grey-level noise faces (PNG-encoded for ``embed_encoded``)."""
        height, width = (int(v) for v in self.image_size.numpy())
        rng = np.random.default_rng(batch_size)
        pixels = rng.integers(0, 256, (batch_size, height, width, 3), dtype=np.uint8)
        encoded = np.array([tf.io.encode_png(p).numpy() for p in pixels], dtype=object)
        return {
            "serving_default": {"images": pixels},
            "embed_encoded": {"encoded": encoded},
            "embed_float": {"images": get_standardization(self.standardization.numpy().decode())(pixels).numpy()},
            "verify": {"images_a": pixels, "images_b": pixels[::-1].copy()},
        }


def save_serving_module(module: tf.Module, directory: str, meta: dict,
                        warmup_requests: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    """Saves ``module.endpoints`` (name -> tf.function) as a SavedModel that TF Serving runs,
    with ``assets.extra/tfface.json`` and the warm-up requests."""
    captured = {}
    for fn in module.endpoints.values():
        for variable in fn.get_concrete_function().variables:
            captured[id(variable)] = variable
    module._serving_variables = list(captured.values())  # the tf.Variables the graphs read
    tf.saved_model.save(module, directory, signatures=dict(module.endpoints))
    os.makedirs(os.path.join(directory, "assets.extra"), exist_ok=True)
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    warmup.write_requests(os.path.join(directory, warmup.WARMUP_FILE), warmup_requests)


def read_exported_weights(directory: str) -> dict[str, np.ndarray]:
    """The weights an export's signatures read, by Keras variable path (``conv1/kernel``): what
    :func:`save_serving_module` tracked, read back from the SavedModel."""
    loaded = tf.saved_model.load(directory)
    return {v.name.removesuffix(":0"): v.numpy() for v in getattr(loaded, "_serving_variables", [])}


def export_saved_model(
    embedder: keras.Model,
    export_base: str,
    model_name: str,
    version: int | None = None,
    alignment: dict | None = None,
    threshold: str | None = None,
    warmup_batch_sizes: tuple[int, ...] = warmup.BATCH_SIZES,
    extra: Callable[[str], None] | None = None,
    source: dict | None = None,
) -> str:
    """Writes ``export_base/model_name/<version>`` (next free integer when None); returns it.

    Args:
        alignment: how the training faces were aligned (see :func:`embedder_metadata`).
        source: provenance of imported weights (see :func:`embedder_metadata`).
        threshold: a calibrated ``threshold.json`` (or its directory) of this model: copied into
            the version and its value gives ``verify`` its ``same`` output.
        warmup_batch_sizes: one warm-up request per signature and batch size.
        extra: called with the temporary version directory to add files before it is published.
    """
    meta = embedder_metadata(embedder, alignment, source)
    calibrated = read_threshold(threshold, meta["fingerprint"]) if threshold else None
    module = EmbedderSignatures(embedder, meta, calibrated)
    requests = [(name, inputs) for size in warmup_batch_sizes for name, inputs in module.warmup_inputs(size).items()]

    def write(directory: str) -> None:
        save_serving_module(module, directory, meta, requests)
        if calibrated is not None:
            shutil.copyfile(threshold if os.path.isfile(threshold) else os.path.join(threshold, THRESHOLD_FILE),
                            os.path.join(directory, THRESHOLD_FILE))
        if extra is not None:
            extra(directory)

    return write_version(export_base, model_name, write, version)

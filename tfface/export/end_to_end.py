"""One SavedModel from whole photos to face embeddings: decode, MTCNN, alignment, backbone.

``serving_default``: ``image_bytes`` string (B,) encoded photos (JPEG/PNG/GIF/BMP) ->

* ``boxes`` float32 (B, F, 4): x1, y1, x2, y2 in the photo's pixels (EXIF orientation applied);
* ``scores`` float32 (B, F): MTCNN's face probability;
* ``landmarks`` float32 (B, F, 5, 2): eyes, nose, mouth corners (x, y);
* ``embeddings`` float32 (B, F, D): L2-normalised;
* ``num_faces`` int32 (B,): how many of the F = ``max_faces`` rows are faces (most probable
  first); the other rows are zeros.

Every step is a TF op inside the graph and is the same code as the Python path: the image
contract's :func:`tfface.core.images.decode`, :class:`tfface_align.MTCNN`'s detector graph, the
alignment the model's training faces were made with (:func:`tfface_align.align_tf` onto the
arcface/sphereface template, or facenet's margin crop :func:`tfface_align.crop_tf`) rounded to
uint8 pixels, :func:`tfface.core.images.resize` to the model's input, and the embedder.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfface.core import images
from tfface.core.errors import UserError
from tfface.export import warmup
from tfface.export.saved_model import check_batch, decode_checked, embedder_metadata, save_serving_module
from tfface.export.versions import write_version
from tfface_align import MTCNN, align_tf, crop_tf

KIND = "photos"  # tfface.json's "kind" of an end-to-end export
MISSING_ALIGNMENT = ("--with_alignment: the model's alignment is unknown (its dataset does not record how its faces "
                     "were cut from photos); give it with --align arcface|sphereface|facenet_crop and "
                     "--align_image_size H,W (and --align_margin M for facenet_crop), or export a model trained on "
                     "faces aligned by tfface_align")


def aligned_faces(image: tf.Tensor, boxes: tf.Tensor, landmarks: tf.Tensor, alignment: dict) -> tf.Tensor:
    """uint8 (N, h, w, 3) faces of one photo, aligned as ``alignment`` says (TF ops)."""
    size = alignment["image_size"]
    if alignment["align"] == "facenet_crop":
        faces = crop_tf(image, boxes, alignment["margin"], size)
    else:
        faces = align_tf(image, landmarks, alignment["align"], size)
    return tf.cast(tf.clip_by_value(tf.round(faces), 0.0, 255.0), tf.uint8)


class PhotoSignatures(tf.Module):
    """``serving_default``: photos -> boxes, scores, landmarks, embeddings, num_faces."""

    def __init__(self, embedder: keras.Model, meta: dict, detector: MTCNN, max_faces: int):
        super().__init__()
        alignment = meta["alignment"]
        height, width = meta["image_size"]
        dim = meta["embedding_size"]
        self.image_size = tf.Variable(meta["image_size"], trainable=False, dtype=tf.int32, name="image_size")
        self.max_faces = tf.Variable(max_faces, trainable=False, dtype=tf.int32, name="max_faces")

        def one_photo(data):
            image = decode_checked(data, "image_bytes")
            boxes, landmarks = detector.detect_image_graph(image)
            count = tf.minimum(tf.shape(boxes)[0], max_faces)
            boxes, landmarks = boxes[:count], landmarks[:count]
            faces = images.resize(aligned_faces(image, boxes, landmarks, alignment), (height, width))
            pad = max_faces - count

            def padded(t):
                return tf.concat([t, tf.zeros(tf.concat([[pad], tf.shape(t)[1:]], 0), t.dtype)], 0)

            return padded(boxes[:, :4]), padded(boxes[:, 4]), padded(landmarks), padded(faces), count

        signature = (
            tf.TensorSpec([max_faces, 4], tf.float32), tf.TensorSpec([max_faces], tf.float32),
            tf.TensorSpec([max_faces, 5, 2], tf.float32), tf.TensorSpec([max_faces, height, width, 3], tf.uint8),
            tf.TensorSpec([], tf.int32),
        )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serving_default(image_bytes):
            image_bytes = check_batch(image_bytes, "image_bytes")
            boxes, scores, landmarks, faces, count = tf.map_fn(one_photo, image_bytes, fn_output_signature=signature)
            photos = tf.shape(image_bytes)[0]
            valid = tf.reshape(tf.range(max_faces)[None, :] < count[:, None], [-1])
            where = tf.cast(tf.where(valid), tf.int32)
            chosen = tf.gather_nd(tf.reshape(faces, [-1, height, width, 3]), where)
            # One blank face more, so the backbone never sees an empty batch (oneDNN fails on it).
            chosen = tf.concat([chosen, tf.zeros([1, height, width, 3], tf.uint8)], 0)
            embedded = tf.math.l2_normalize(tf.cast(embedder(tf.cast(chosen, tf.float32), training=False), tf.float32), 1)
            embeddings = tf.scatter_nd(where, embedded[:-1], tf.stack([photos * max_faces, dim]))
            return {"boxes": boxes, "scores": scores, "landmarks": landmarks,
                    "embeddings": tf.reshape(embeddings, [photos, max_faces, dim]), "num_faces": count}

        self.endpoints = {"serving_default": serving_default}

    @staticmethod
    def warmup_inputs(batch_size: int) -> dict[str, dict[str, np.ndarray]]:
        """A request of ``batch_size`` smooth 160x160 JPEG photos (no face: P/R/O-Net and the
        backbone still run on their blank patches)."""
        ramp = np.linspace(0, 255, 160).astype(np.uint8)
        photo = np.full((160, 160, 3), 128, np.uint8)
        photo[..., 0], photo[..., 1] = ramp[:, None], ramp[None, :]
        data = tf.io.encode_jpeg(photo).numpy()
        return {"serving_default": {"image_bytes": np.array([data] * batch_size, dtype=object)}}


def photo_metadata(embedder: keras.Model, alignment: dict | None, detector: MTCNN, max_faces: int,
                   source: dict | None = None) -> dict:
    """:func:`embedder_metadata` plus ``kind`` = ``"photos"`` and the detector's settings."""
    if alignment is None:
        raise UserError(MISSING_ALIGNMENT)
    meta = embedder_metadata(embedder, alignment, source)
    meta.update(kind=KIND, max_faces=int(max_faces), detector={
        "min_face_size": detector.min_face_size, "thresholds": list(detector.thresholds), "factor": detector.factor,
        "nms_thresholds": list(detector.nms_thresholds), "nms": detector.nms,
    })
    return meta


def export_end_to_end(
    embedder: keras.Model,
    export_base: str,
    model_name: str,
    alignment: dict | None,
    version: int | None = None,
    max_faces: int = 10,
    detector: MTCNN | None = None,
    warmup_batch_sizes: tuple[int, ...] = warmup.BATCH_SIZES,
    source: dict | None = None,
) -> str:
    """Writes the photo -> faces -> embeddings SavedModel to ``export_base/model_name/<version>``.

    Args:
        alignment: how the model's training faces were aligned (required: ``{"align",
            "image_size", "margin"}``).
        max_faces: rows per photo in the outputs; more faces than this keep the most probable.
        detector: the MTCNN whose settings (min face size, thresholds, ...) the graph uses.
        source: provenance of imported weights (see :func:`embedder_metadata`).
    """
    if max_faces < 1:
        raise UserError(f"--max_faces: expected >= 1, got {max_faces}")
    if alignment is None:
        raise UserError(MISSING_ALIGNMENT)
    detector = detector or MTCNN()
    meta = photo_metadata(embedder, alignment, detector, max_faces, source)
    module = PhotoSignatures(embedder, meta, detector, max_faces)
    requests = [(name, inputs) for size in warmup_batch_sizes for name, inputs in module.warmup_inputs(size).items()]
    return write_version(export_base, model_name, lambda d: save_serving_module(module, d, meta, requests), version)

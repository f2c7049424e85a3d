"""Cross-entropy over a head's logits: (B, C) for one head, (B, N, C) for N heads (summed)."""
from __future__ import annotations

import tensorflow as tf


def head_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example softmax cross-entropy (B,); with N heads, the sum of the N losses."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    logits = tf.cast(logits, tf.float32)
    if logits.shape.rank == 3:
        labels = tf.repeat(labels[:, None], tf.shape(logits)[1], axis=1)
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits), axis=1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def head_predictions(logits: tf.Tensor) -> tf.Tensor:
    """Predicted class per example (B,); with N heads, argmax of the summed log-probabilities."""
    logits = tf.cast(logits, tf.float32)
    if logits.shape.rank == 3:
        logits = tf.reduce_sum(tf.nn.log_softmax(logits), axis=1)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def feature_loss(head, embeddings: tf.Tensor) -> tf.Tensor:
    """The head's per-example loss term on the embeddings (B,) (MagFace's regulariser), zeros
    for heads without one; add it to :func:`head_loss`'s cross-entropy."""
    term = getattr(head, "feature_loss", None)
    value = term(embeddings) if term is not None else None
    return tf.zeros(tf.shape(embeddings)[:1]) if value is None else tf.cast(value, tf.float32)

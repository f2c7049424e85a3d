"""facenet's prelogits norm regulariser and prelogits histogram."""
from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def prelogits_norm_loss(prelogits: tf.Tensor, p: float = 1.0, eps: float = 1e-4) -> tf.Tensor:
    """``mean_i ||(|x_i| + eps)||_p``: facenet's prelogits norm (times ``prelogits_norm_loss_factor``).

    facenet adds ``eps`` to the absolute values before the p-norm so the gradient at 0 is finite.

    Args:
        prelogits: (B, D) features before the L2 normalisation.
        p: the norm's order (facenet's ``prelogits_norm_p``), > 0.
        eps: added to ``|x|``.
    """
    if p <= 0:
        raise ValueError(f"p: expected > 0, got {p}")
    x = tf.abs(tf.cast(prelogits, tf.float32)) + eps
    return tf.reduce_mean(tf.pow(tf.reduce_sum(tf.pow(x, p), axis=1), 1.0 / p))


def prelogits_histogram(prelogits: tf.Tensor, hist_max: float = 10.0, bins: int = 1000) -> tf.Tensor:
    """Counts (bins,) int32 of ``min(|x|, hist_max)`` over [0, hist_max], as facenet's ``prelogits_hist``."""
    x = tf.minimum(tf.abs(tf.cast(tf.reshape(prelogits, [-1]), tf.float32)), hist_max)
    return tf.histogram_fixed_width(x, [0.0, float(hist_max)], nbins=bins)


def prelogits_histogram_summary(
    prelogits: tf.Tensor, step: int | tf.Tensor, hist_max: float = 10.0, bins: int = 1000, name: str = "prelogits_hist"
) -> tf.Tensor:
    """Writes :func:`prelogits_histogram` to the default summary writer as a TensorBoard histogram.

    Written with ``tf.summary.write`` in TensorBoard's histogram format (a (bins, 3) tensor of
    left edge, right edge, count; plugin ``histograms``), so it needs no ``tensorboard`` package.
    Returns True when a default writer exists (as ``tf.summary`` functions do).
    """
    edges = tf.linspace(0.0, float(hist_max), bins + 1)
    counts = tf.cast(prelogits_histogram(prelogits, hist_max, bins), tf.float32)
    buckets = tf.stack([edges[:-1], edges[1:], counts], axis=1)
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "histograms"
    return tf.summary.write(name, buckets, step=step, metadata=metadata)

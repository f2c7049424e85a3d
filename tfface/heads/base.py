"""Shared machinery of the heads: float32 compute, class-centre kernel, target angles.

Every head is a Keras layer called as ``head([embeddings, labels]) -> logits``. A label of -1
means "no target" (no margin on that row): SeqFace passes -1 for frames of unlabelled
sequences (see :func:`tfface.losses.mask_sequence_labels`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

# Squared norms below this are treated as zero inside square roots (keeps gradients finite).
_TINY = 1e-30


def head_dtype(dtype=None) -> str:
    """Compute dtype of a head: float64 when asked for, otherwise float32 (also under mixed policies)."""
    if dtype is None:
        return "float32"
    policy = keras.dtype_policies.get(dtype)
    return "float64" if policy.compute_dtype == "float64" else "float32"


def safe_sqrt(x: tf.Tensor) -> tf.Tensor:
    """``sqrt(x)`` with a finite gradient at 0 (and 0 for negative round-off)."""
    return tf.sqrt(tf.maximum(x, _TINY))


def target_mask(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """(B, C) bool, True at ``[i, labels[i]]``; an all-False row for a label of -1."""
    labels = tf.cast(tf.reshape(labels, [-1, 1]), tf.int32)
    return tf.equal(labels, tf.range(num_classes, dtype=tf.int32)[None, :])


def unit_angle(x_unit: tf.Tensor, w_unit: tf.Tensor) -> tf.Tensor:
    """Angle (B,) between unit rows, ``2 atan2(||x - w||, ||x + w||)``: accurate near 0 and pi.

    (``acos`` of the dot product loses all precision there and has an infinite derivative.)
    """
    return 2.0 * tf.atan2(
        safe_sqrt(tf.reduce_sum(tf.square(x_unit - w_unit), axis=1)),
        safe_sqrt(tf.reduce_sum(tf.square(x_unit + w_unit), axis=1)),
    )


def gather_targets(scores: tf.Tensor, w_unit: tf.Tensor, labels: tf.Tensor):
    """Target mask (B, C), target centres (B, D) and target entries of ``scores`` (B,).

    A label of -1 gathers column 0; its all-False mask row keeps that row margin-free.
    """
    num_classes = w_unit.shape[1] if w_unit.shape[1] is not None else tf.shape(w_unit)[1]
    mask = target_mask(labels, num_classes)
    safe_labels = tf.maximum(tf.cast(tf.reshape(labels, [-1]), tf.int32), 0)
    w_t = tf.transpose(tf.gather(w_unit, safe_labels, axis=1))
    return mask, w_t, tf.reduce_sum(tf.where(mask, scores, tf.zeros_like(scores)), axis=1)


def cross_replica_sum(value: tf.Tensor) -> tf.Tensor:
    """Sum of ``value`` over the replicas in sync (itself with one replica or outside ``strategy.run``)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


class BatchView:
    """Where a head's rows and their target centres live, for statistics of the global batch.

    A plain head (``rows_global=False``) sees this replica's rows, each with its target centre;
    under Partial FC (``rows_global=True``) every replica sees the all-gathered global batch but
    holds the target centres of its own classes only. Per-row sums are taken over the global
    batch either way, so a head's moving statistics are the same on every replica and equal to
    those of one device running the whole batch.
    """

    def __init__(self, rows_global: bool = False):
        self.rows_global = bool(rows_global)

    def sum_rows(self, values: tf.Tensor) -> tf.Tensor:
        """Sum over the global batch of a per-row value (B,) every replica knows for its rows."""
        total = tf.reduce_sum(values, axis=0)
        return total if self.rows_global else cross_replica_sum(total)

    def sum_targets(self, values: tf.Tensor, has_target: tf.Tensor) -> tf.Tensor:
        """Sum over the global batch of a per-row value known where the row's target centre is."""
        return cross_replica_sum(tf.reduce_sum(tf.where(has_target, values, tf.zeros_like(values)), axis=0))

    def at_targets(self, values: tf.Tensor, has_target: tf.Tensor) -> tf.Tensor:
        """Per row (B,), the value computed where its target centre is (0 for rows without one)."""
        values = tf.where(has_target, values, tf.zeros_like(values))
        return cross_replica_sum(values) if self.rows_global else values


def subcentre_targets(cos: tf.Tensor, w_unit: tf.Tensor, labels: tf.Tensor, k: int):
    """Sub-centres (``k`` columns per class, class-major): per class the largest of its cosines
    (B, C'), the target mask (B, C'), each row's nearest target sub-centre (B, D) and its cosine (B,)."""
    num_classes = w_unit.shape[1] // k if w_unit.shape[1] is not None else tf.shape(w_unit)[1] // k
    sub = tf.reshape(cos, [tf.shape(cos)[0], num_classes, k])
    cos = tf.reduce_max(sub, axis=2)
    mask = target_mask(labels, num_classes)
    safe_labels = tf.maximum(tf.cast(tf.reshape(labels, [-1]), tf.int32), 0)
    nearest = tf.argmax(tf.gather(sub, safe_labels, axis=1, batch_dims=1), axis=1, output_type=tf.int32)
    w_t = tf.transpose(tf.gather(w_unit, safe_labels * k + nearest, axis=1))
    return cos, mask, w_t, tf.reduce_sum(tf.where(mask, cos, tf.zeros_like(cos)), axis=1)


class Head(keras.layers.Layer):
    """Base of every head: ``num_classes``, a float32 (or float64) compute dtype, ``kernel`` (D, C).

    ``kernel`` holds ``centres_per_class`` columns per class (class-major: class c, sub-centre k
    is column ``c * K + k``); 1 except for sub-center ArcFace.

    Args:
        num_classes: number of identities C.
    """

    centres_per_class = 1

    def __init__(self, num_classes: int, **kwargs):
        kwargs["dtype"] = head_dtype(kwargs.get("dtype"))
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        self.num_classes = int(num_classes)

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes * self.centres_per_class), initializer=keras.initializers.GlorotUniform()
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class NormalizedHead(Head):
    """Base of the heads on the unit hypersphere: cos(theta) between embedding and class centre.

    Class centres are the columns of ``kernel``, shape (embedding_dim, num_classes), L2-normalised
    on every call. The head computes in float32 even under a ``mixed_float16`` policy. Subclasses
    implement :meth:`target_logit` (the target logit before scaling, from the target cosine and
    angle); the other logits are ``scale * cos(theta)``. The target angle comes from
    :func:`unit_angle`, accurate near 0 and near pi.

    Args:
        num_classes: number of identities C.
        scale: s, the radius of the hypersphere the logits live on.
        normalize_input: L2-normalise the embeddings (True). False takes them as given, as
            MultiFace does after normalising the whole vector; then the "cosine" is
            ``x . w / ||w||`` clipped to [-1, 1] and the angle its arccos.
    """

    def __init__(self, num_classes: int, scale: float = 64.0, normalize_input: bool = True, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.scale = float(scale)
        self.normalize_input = bool(normalize_input)

    def cosines(self, embeddings: tf.Tensor, labels: tf.Tensor, kernel: tf.Tensor | None = None):
        """Returns ``cos`` (B, C), the target cosine and angle (B,), and the target mask (B, C).

        ``kernel`` (D, C' * centres_per_class) replaces the head's own centres (Partial FC passes
        its shard; labels then index its classes). With sub-centres, ``cos`` is each class's
        largest sub-centre cosine and the target angle is to the row's nearest target sub-centre.
        """
        dtype = self.compute_dtype
        x = tf.cast(embeddings, dtype)
        if self.normalize_input:
            x = tf.math.l2_normalize(x, axis=1)
        w = tf.math.l2_normalize(tf.cast(self.kernel if kernel is None else kernel, dtype), axis=0)
        cos = tf.clip_by_value(tf.matmul(x, w), -1.0, 1.0)
        if self.centres_per_class > 1:
            cos, mask, w_t, cos_t = subcentre_targets(cos, w, labels, self.centres_per_class)
        else:
            mask, w_t, cos_t = gather_targets(cos, w, labels)
        if self.normalize_input:
            theta_t = unit_angle(x, w_t)
        else:
            theta_t = tf.atan2(safe_sqrt(1.0 - tf.square(cos_t)), cos_t)
        return cos, cos_t, theta_t, mask

    def target_logit(self, cos_t: tf.Tensor, theta_t: tf.Tensor) -> tf.Tensor:
        """Target logit before scaling, from cos(theta_y) and theta_y, each (B,)."""
        raise NotImplementedError

    def margin_logits(self, cos, cos_t, theta_t, mask, embeddings, training=False, view: BatchView | None = None):
        """Scaled logits (B, C') from :meth:`cosines`' outputs; ``embeddings`` are the rows as given
        (before normalisation: the quality-aware heads read their norms) and ``view`` says where
        the global batch is (:class:`BatchView`; Partial FC passes ``rows_global=True``).
        Heads with moving statistics update them when ``training``."""
        return self.scale * tf.where(mask, self.target_logit(cos_t, theta_t)[:, None], cos)

    def feature_loss(self, embeddings: tf.Tensor) -> tf.Tensor | None:
        """A per-example loss term on the embeddings themselves (B,), or None (MagFace's regulariser)."""
        return None

    def call(self, inputs, training=None):
        embeddings, labels = inputs
        cos, cos_t, theta_t, mask = self.cosines(embeddings, labels)
        return self.margin_logits(cos, cos_t, theta_t, mask, embeddings, bool(training), BatchView())

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "normalize_input": self.normalize_input}

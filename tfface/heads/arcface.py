"""ArcFace: additive angular margin (Deng et al., CVPR 2019, https://arxiv.org/abs/1801.07698)."""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfface.heads.registry import register_head


@register_head("arcface")
class ArcFace(keras.layers.Layer):
    """Logits ``s * cos(theta + m)`` for the target class, ``s * cos(theta)`` for the others.

    ``theta`` is the angle between the L2-normalised embedding and the L2-normalised class
    centre (a column of ``kernel``, shape (embedding_dim, num_classes)). When
    ``easy_margin=False`` and ``cos(theta) <= cos(pi - m)`` (theta + m would pass pi, where
    cos is no longer monotonic) the target logit is ``s * (cos(theta) - m * sin(pi - m))``, as
    InsightFace does. With ``easy_margin=True`` the margin applies only where cos(theta) > 0.
    Computes in float32 whatever the dtype policy.

    Args:
        num_classes: number of identities C.
        scale: s.
        margin: m, in radians.
        easy_margin: see above.

    Call: ``head([embeddings, labels])`` -> logits (B, C).
    """

    def __init__(self, num_classes: int, scale: float = 64.0, margin: float = 0.5, easy_margin: bool = False, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.scale = float(scale)
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes), initializer=keras.initializers.GlorotUniform()
        )

    def call(self, inputs):
        embeddings, labels = inputs
        x = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
        w = tf.math.l2_normalize(tf.cast(self.kernel, tf.float32), axis=0)
        cos = tf.clip_by_value(tf.matmul(x, w), -1.0, 1.0)
        sin = tf.sqrt(tf.maximum(1.0 - cos * cos, 0.0))
        cos_m = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        if self.easy_margin:
            target = tf.where(cos > 0.0, cos_m, cos)
        else:
            fallback = cos - self.margin * math.sin(math.pi - self.margin)
            target = tf.where(cos > math.cos(math.pi - self.margin), cos_m, fallback)
        labels = tf.cast(tf.reshape(labels, [-1, 1]), tf.int32)
        is_target = tf.equal(labels, tf.range(self.num_classes, dtype=tf.int32)[None, :])
        return self.scale * tf.where(is_target, target, cos)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "scale": self.scale,
            "margin": self.margin,
            "easy_margin": self.easy_margin,
        }

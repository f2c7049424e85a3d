"""Softmax: facenet's logits layer, a plain fully connected layer with bias."""
from __future__ import annotations

import tensorflow as tf

from tfface.heads.base import Head
from tfface.heads.registry import register_head


@register_head("softmax")
class Softmax(Head):
    """Logits ``x W + b`` (labels are accepted and ignored).

    The classifier of facenet's ``train_softmax`` ("FaceNet: A Unified Embedding for Face
    Recognition and Clustering", Schroff et al., 2015, https://arxiv.org/abs/1503.03832, trained
    as a classifier as in "Deep Face Recognition", Parkhi et al., 2015): Xavier-initialised
    ``kernel`` of shape (embedding_dim, num_classes) and a zero-initialised ``bias``. Computes
    in float32 whatever the dtype policy.

    Args:
        num_classes: number of identities C.
        use_bias: add the bias (True, as facenet).

    Example:
        >>> logits = Softmax(10)([tf.random.normal((4, 128)), tf.constant([0, 1, 2, 9])])
    """

    def __init__(self, num_classes: int, use_bias: bool = True, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        super().build(input_shape)
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros") if self.use_bias else None

    def call(self, inputs, training=None):
        embeddings = tf.cast(inputs[0], self.compute_dtype)
        logits = tf.matmul(embeddings, tf.cast(self.kernel, self.compute_dtype))
        if self.bias is not None:
            logits = logits + tf.cast(self.bias, self.compute_dtype)
        return logits

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias}

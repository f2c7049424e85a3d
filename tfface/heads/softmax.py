"""Softmax: facenet's logits layer, a plain fully connected layer with bias."""
from __future__ import annotations

import keras
import tensorflow as tf

from tfface.heads.base import head_dtype
from tfface.heads.registry import register_head


@register_head("softmax")
class Softmax(keras.layers.Layer):
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
        kwargs["dtype"] = head_dtype(kwargs.get("dtype"))
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes), initializer=keras.initializers.GlorotUniform()
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros") if self.use_bias else None

    def call(self, inputs, training=None):
        embeddings = tf.cast(inputs[0], self.compute_dtype)
        logits = tf.matmul(embeddings, tf.cast(self.kernel, self.compute_dtype))
        if self.bias is not None:
            logits = logits + tf.cast(self.bias, self.compute_dtype)
        return logits

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "use_bias": self.use_bias}

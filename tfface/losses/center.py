"""Center loss with facenet's centre update."""
from __future__ import annotations

import keras
import tensorflow as tf


class CenterLoss(keras.layers.Layer):
    """``mean((x - c_y)^2)`` over the batch and the embedding dimensions, centres updated as facenet.

    Paper: "A Discriminative Feature Learning Approach for Deep Face Recognition" (Wen et al.,
    ECCV 2016), https://ydwen.github.io/papers/WenECCV16.pdf; the variant of facenet's
    ``center_loss``. The centres (``centers``, (num_classes, embedding_dim), zero-initialised,
    non-trainable) are not moved by the optimizer: every call with ``training=True`` applies
    ``c_y <- c_y - (1 - alpha) (c_y - x)`` for every example (examples of the same class add up,
    as facenet's ``scatter_sub``); the loss uses the centres from before the update. Under a
    distribution strategy the per-replica updates are summed (so a global batch updates as one).
    The trainer multiplies the returned scalar by ``center_loss_factor``.

    Args:
        num_classes: number of identities C.
        embedding_dim: D, the size of the features (facenet: the prelogits).
        alpha: facenet's ``center_loss_alfa``; 1 - alpha is the centre learning rate.

    Call: ``loss = center_loss(embeddings, labels, training=True)`` -> scalar (float32).

    Example:
        >>> center_loss = CenterLoss(num_classes=10, embedding_dim=128, alpha=0.9)
        >>> total = ce + 1e-2 * center_loss(prelogits, labels, training=True)
    """

    def __init__(self, num_classes: int, embedding_dim: int, alpha: float = 0.9, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.alpha = float(alpha)
        self.centers = self.add_weight(
            name="centers", shape=(self.num_classes, self.embedding_dim), initializer="zeros",
            trainable=False, aggregation="sum",
        )
        self.built = True

    def call(self, embeddings, labels, training=None):
        x = tf.cast(embeddings, tf.float32)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        centers = tf.gather(tf.convert_to_tensor(self.centers), labels)
        loss = tf.reduce_mean(tf.square(x - centers))
        if training:
            diff = (1.0 - self.alpha) * (centers - tf.stop_gradient(x))
            # The tf.Variable's own assign_sub: Keras' assign_sub is assign(v - d), which a "sum"
            # aggregation would sum over replicas as N v - d.
            self.centers.value.assign_sub(tf.math.unsorted_segment_sum(diff, labels, self.num_classes))
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "alpha": self.alpha,
        }

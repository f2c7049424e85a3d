"""MultiHead: N heads on N equal chunks of the embedding (MultiFace)."""
from __future__ import annotations

import keras
import tensorflow as tf

from tfface.heads.base import NormalizedHead, head_dtype
from tfface.heads.registry import get_head_class, register_head


@register_head("multihead")
class MultiHead(keras.layers.Layer):
    """Splits the embedding into ``num_heads`` equal chunks, one head of type ``head_name`` each.

    The MultiFace seed (MultiFace_Pytorch, after "ArcFace: Additive Angular Margin Loss for Deep
    Face Recognition", https://arxiv.org/abs/1801.07698): the loss is the sum of the N
    cross-entropies, which :func:`tfface.heads.head_loss` computes from the (B, N, C) logits this
    layer returns (``head_predictions`` sums the N log-probabilities).

    With ``normalize_chunks=True`` (default) each chunk is L2-normalised by its head, i.e. each
    chunk lives on its own hypersphere. ``normalize_chunks=False`` reproduces the seed exactly:
    the whole embedding is L2-normalised, then split, and each head takes its chunk as is (its
    "cosine" is ``chunk . w / ||w||``, clipped to [-1, 1]). Heads without an input
    normalisation (``softmax``, ``sphereface``) get their chunk unchanged either way.

    Args:
        num_classes: number of identities C (first, as for every head, so that
            ``get_head("multihead", C, head_name=..., num_heads=...)`` works).
        head_name: registry name of the per-chunk head (e.g. ``"arcface"``, ``"cosface"``).
        num_heads: N; the embedding size must be divisible by N.
        normalize_chunks: see above.
        **head_kwargs: passed to every per-chunk head (e.g. ``scale``, ``margin``).

    Call: ``head([embeddings, labels])`` -> logits (B, N, C); the per-chunk heads are
    ``head.heads`` (each with its own ``kernel`` of shape (embedding_dim / N, C)).

    Example:
        >>> head = MultiHead(10, head_name="arcface", num_heads=2, margin=0.5)
        >>> logits = head([tf.random.normal((4, 128)), tf.constant([0, 1, 2, 9])])  # (4, 2, 10)
    """

    def __init__(
        self,
        num_classes: int,
        head_name: str = "arcface",
        num_heads: int = 2,
        normalize_chunks: bool = True,
        **kwargs,
    ):
        base_kwargs = {k: kwargs.pop(k) for k in ("name", "trainable") if k in kwargs}
        dtype = head_dtype(kwargs.pop("dtype", None))
        super().__init__(dtype=dtype, **base_kwargs)
        if head_name == "multihead":
            raise ValueError("head_name: a MultiHead cannot contain MultiHeads")
        if int(num_heads) < 1:
            raise ValueError(f"num_heads: expected >= 1, got {num_heads}")
        self.num_classes = int(num_classes)
        self.head_name = str(head_name)
        self.num_heads = int(num_heads)
        self.normalize_chunks = bool(normalize_chunks)
        self.head_kwargs = dict(kwargs)
        head_class = get_head_class(self.head_name)
        chunk_kwargs = dict(self.head_kwargs, dtype=dtype)
        if not self.normalize_chunks and issubclass(head_class, NormalizedHead):
            chunk_kwargs["normalize_input"] = False
        # One attribute per head (not a list): tf.train.Checkpoint tracks attributes, not Keras lists.
        for i in range(self.num_heads):
            setattr(self, f"head_{i}", head_class(self.num_classes, name=f"head_{i}", **chunk_kwargs))

    @property
    def heads(self) -> list[keras.layers.Layer]:
        """The per-chunk heads, in chunk order."""
        return [getattr(self, f"head_{i}") for i in range(self.num_heads)]

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        if dim % self.num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by num_heads={self.num_heads}")
        chunk = (input_shape[0][0], dim // self.num_heads)
        for head in self.heads:
            head.build([chunk, input_shape[1]])

    def call(self, inputs, training=None):
        embeddings, labels = inputs
        x = tf.cast(embeddings, self.compute_dtype)
        if not self.normalize_chunks:
            x = tf.math.l2_normalize(x, axis=1)
        chunks = tf.split(x, self.num_heads, axis=1)
        return tf.stack([h([c, labels], training=training) for h, c in zip(self.heads, chunks)], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_heads, self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "head_name": self.head_name,
            "num_heads": self.num_heads,
            "normalize_chunks": self.normalize_chunks,
            "head_kwargs": self.head_kwargs,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        head_kwargs = config.pop("head_kwargs", {})
        return cls(**config, **head_kwargs)

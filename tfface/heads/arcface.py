"""ArcFace: additive angular margin (Deng et al., CVPR 2019, https://arxiv.org/abs/1801.07698)."""
from __future__ import annotations

import math

import tensorflow as tf

from tfface.heads.base import NormalizedHead
from tfface.heads.registry import register_head


def arc_margin(cos_t: tf.Tensor, theta_t: tf.Tensor, margin, easy_margin: bool = False) -> tf.Tensor:
    """``cos(theta + m)`` with InsightFace's fallback ``cos(theta) - m sin(pi - m)`` once theta
    passes pi - m (or, ``easy_margin``, ``cos(theta)`` where it is <= 0); ``margin`` a number or
    a per-row tensor (B,)."""
    phi = tf.cos(theta_t + margin)
    if easy_margin:
        return tf.where(cos_t > 0.0, phi, cos_t)
    cos, sin = (math.cos, math.sin) if isinstance(margin, (int, float)) else (tf.cos, tf.sin)
    return tf.where(cos_t > cos(math.pi - margin), phi, cos_t - margin * sin(math.pi - margin))


@register_head("arcface")
class ArcFace(NormalizedHead):
    """Logits ``s * cos(theta + m)`` for the target class, ``s * cos(theta)`` for the others.

    Paper: "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    https://arxiv.org/abs/1801.07698.

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
        normalize_input: see :class:`~tfface.heads.base.NormalizedHead`.

    Call: ``head([embeddings, labels])`` -> logits (B, C).

    Example:
        >>> head = ArcFace(10)
        >>> logits = head([tf.random.normal((4, 128)), tf.constant([0, 1, 2, 9])])
    """

    def __init__(
        self, num_classes: int, scale: float = 64.0, margin: float = 0.5, easy_margin: bool = False, **kwargs
    ):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)

    def target_logit(self, cos_t, theta_t):
        return arc_margin(cos_t, theta_t, self.margin, self.easy_margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "easy_margin": self.easy_margin}

"""ArcFace: additive angular margin (Deng et al., CVPR 2019, https://arxiv.org/abs/1801.07698)."""
from __future__ import annotations

import math

import tensorflow as tf

from tfface.heads.base import NormalizedHead
from tfface.heads.registry import register_head


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
        m = self.margin
        phi = tf.cos(theta_t + m)
        if self.easy_margin:
            return tf.where(cos_t > 0.0, phi, cos_t)
        return tf.where(cos_t > math.cos(math.pi - m), phi, cos_t - m * math.sin(math.pi - m))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "easy_margin": self.easy_margin}

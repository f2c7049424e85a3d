"""NormFace, CosFace and the combined margin: heads on the unit hypersphere."""
from __future__ import annotations

import tensorflow as tf

from tfface.heads.base import NormalizedHead
from tfface.heads.registry import register_head


@register_head("normface")
class NormFace(NormalizedHead):
    """Logits ``s * cos(theta)`` for every class, no margin.

    Paper: "NormFace: L2 Hypersphere Embedding for Face Verification" (Wang et al., 2017),
    https://arxiv.org/abs/1704.06369.

    Args:
        num_classes: number of identities C.
        scale: s.
        normalize_input: see :class:`~tfface.heads.base.NormalizedHead`.

    Example:
        >>> logits = NormFace(10)([tf.random.normal((4, 128)), tf.constant([0, 1, 2, 9])])
    """

    def __init__(self, num_classes: int, scale: float = 30.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)

    def target_logit(self, cos_t, theta_t):
        return cos_t


@register_head("cosface")
class CosFace(NormalizedHead):
    """Logits ``s * (cos(theta) - m)`` for the target class, ``s * cos(theta)`` for the others.

    Paper: "CosFace: Large Margin Cosine Loss for Deep Face Recognition" (Wang et al., CVPR 2018),
    https://arxiv.org/abs/1801.09414.

    Args:
        num_classes: number of identities C.
        scale: s.
        margin: m, subtracted from the target cosine.
        normalize_input: see :class:`~tfface.heads.base.NormalizedHead`.

    Example:
        >>> logits = CosFace(10)([tf.random.normal((4, 128)), tf.constant([0, 1, 2, 9])])
    """

    def __init__(self, num_classes: int, scale: float = 64.0, margin: float = 0.35, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.margin = float(margin)

    def target_logit(self, cos_t, theta_t):
        return cos_t - self.margin

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@register_head("combined")
class CombinedMargin(NormalizedHead):
    """Logits ``s * (cos(m1 * theta + m2) - m3)`` for the target class, ``s * cos(theta)`` otherwise.

    The combined margin of InsightFace, from "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition" (Deng et al., CVPR 2019), https://arxiv.org/abs/1801.07698, section 3.3:
    m1 is SphereFace's multiplicative margin, m2 ArcFace's additive angular margin, m3 CosFace's
    additive cosine margin. As in InsightFace there is no fallback branch: once
    ``m1 * theta + m2 > pi`` the target logit is no longer monotonic in theta.

    Args:
        num_classes: number of identities C.
        scale: s.
        m1, m2, m3: the three margins (m2 in radians).
        normalize_input: see :class:`~tfface.heads.base.NormalizedHead`.

    Example:
        >>> logits = CombinedMargin(10, m1=1.0, m2=0.3, m3=0.2)([tf.random.normal((4, 128)), tf.constant([0, 1, 2, 9])])
    """

    def __init__(
        self, num_classes: int, scale: float = 64.0, m1: float = 1.0, m2: float = 0.3, m3: float = 0.2, **kwargs
    ):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    def target_logit(self, cos_t, theta_t):
        return tf.cos(self.m1 * theta_t + self.m2) - self.m3

    def get_config(self):
        return {**super().get_config(), "m1": self.m1, "m2": self.m2, "m3": self.m3}

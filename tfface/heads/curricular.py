"""CurricularFace: ArcFace whose hard negatives weigh more as training advances."""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfface.heads.arcface import ArcFace, arc_margin
from tfface.heads.base import BatchView
from tfface.heads.registry import register_head


@register_head("curricularface")
class CurricularFace(ArcFace):
    """Target logit ``s cos(theta_y + m)`` (ArcFace, with its fallback); a negative class j whose
    cosine exceeds ``cos(theta_y + m)`` (a hard negative) gets ``s cos_j (t + cos_j)``, the
    others ``s cos_j``.

    Paper: "CurricularFace: Adaptive Curriculum Learning Loss for Deep Face Recognition"
    (Huang et al., CVPR 2020), https://arxiv.org/abs/2004.00288, eq. (8)-(10). ``t`` (a
    checkpointed weight, initially 0) is the moving average of the mean target cosine: every
    call with ``training=True`` first sets ``t <- momentum * mean_i cos(theta_{y_i}) +
    (1 - momentum) t`` over the global batch (rows with label -1 excluded), then uses it. ``t``
    and the hard-negative test carry no gradient, as in the paper's code. Under Partial FC the
    test compares every sampled centre with the row's ``cos(theta_y + m)``, computed on the
    replica holding the target and shared with the others.

    Args:
        num_classes: number of identities C.
        scale: s.
        margin: m, in radians, in [0, pi/2].
        momentum: the moving average's weight of the current batch, in (0, 1].
    """

    def __init__(self, num_classes: int, scale: float = 64.0, margin: float = 0.5, momentum: float = 0.01, **kwargs):
        kwargs.pop("easy_margin", None)
        super().__init__(num_classes, scale=scale, margin=margin, easy_margin=False, **kwargs)
        if not 0.0 <= self.margin <= math.pi / 2:
            raise ValueError(f"margin: expected a value in [0, {math.pi / 2:g}], got {self.margin:g}")
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"momentum: expected a value in (0, 1], got {momentum:g}")
        self.momentum = float(momentum)

    def build(self, input_shape):
        super().build(input_shape)
        self.build_state()

    def build_state(self) -> None:
        """The moving ``t`` (also called by Partial FC, which never builds the head)."""
        self.t = self.add_weight(name="t", shape=(), initializer="zeros", trainable=False,
                                 aggregation="only_first_replica")

    def margin_logits(self, cos, cos_t, theta_t, mask, embeddings, training=False, view=None):
        view = view or BatchView()
        has_target = tf.reduce_any(mask, axis=1)
        t = tf.cast(self.t, cos.dtype)
        if training:
            count = view.sum_targets(tf.ones_like(cos_t), has_target)
            mean = view.sum_targets(tf.stop_gradient(cos_t), has_target) / tf.maximum(count, 1.0)
            t = tf.where(count > 0, self.momentum * mean + (1.0 - self.momentum) * t, t)
            self.t.assign(tf.cast(t, self.t.dtype))
        # cos(theta_y + m) of each row, and whether the row has a target at all (on some replica).
        shifted = view.at_targets(tf.stop_gradient(tf.cos(theta_t + self.margin)), has_target)
        targeted = view.at_targets(tf.ones_like(cos_t), has_target) > 0
        hard = (cos > shifted[:, None]) & targeted[:, None]
        others = tf.where(hard, cos * (t + cos), cos)
        target = arc_margin(cos_t, theta_t, self.margin)
        return self.scale * tf.where(mask, target[:, None], others)

    def get_config(self):
        config = {**super().get_config(), "momentum": self.momentum}
        config.pop("easy_margin")
        return config

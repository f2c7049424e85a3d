"""Quality-aware margins: AdaFace and MagFace, whose margin follows the embedding's norm.

Both read the norm of the embedding *before* normalisation, which training turns into a
face-quality score (exports give it as the ``quality`` output of their signatures).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfface.heads.arcface import arc_margin
from tfface.heads.base import BatchView, NormalizedHead, safe_sqrt
from tfface.heads.registry import register_head

# AdaFace's eps: the floor of the std in the margin scaler and the bounds of the target angle.
_ADAFACE_EPS = 1e-3


def row_norms(embeddings: tf.Tensor) -> tf.Tensor:
    """||x|| of every row (B,), with a finite gradient at 0."""
    return safe_sqrt(tf.reduce_sum(tf.square(embeddings), axis=1))


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> float:
    value = float(value)
    if not (low < value if low_open else low <= value) or value > high:
        raise ValueError(f"{name}: expected a value in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")
    return value


@register_head("adaface")
class AdaFace(NormalizedHead):
    """AdaFace: a margin that adapts to image quality through the feature norm.

    Paper: "AdaFace: Quality Adaptive Margin for Face Recognition" (Kim et al., CVPR 2022),
    https://arxiv.org/abs/2204.00964, eq. (11)-(13). With ``z = clip(||x||, 0.001, 100)`` (no
    gradient), ``mu``/``sigma`` the moving mean and (unbiased) std of z over batches,
    ``z_hat = clip(h (z - mu) / (sigma + 0.001), -1, 1)``, the target logit is
    ``s (cos(clip(theta - m z_hat, 0.001, pi - 0.001)) - (m + m z_hat))``, the others
    ``s cos(theta)``. High norm (good image): an angular margin, like ArcFace; low norm: an
    additive margin on the cosine, like CosFace with a smaller margin.

    ``batch_mean`` and ``batch_std`` (initial 20 and 100, as the official code) are weights,
    checkpointed and exported with the head. Every call with ``training=True`` first moves them
    towards the batch's statistics: ``mu <- t_alpha mean + (1 - t_alpha) mu``; the batch is the
    global one across replicas (:class:`~tfface.heads.base.BatchView`). The target angle is
    computed accurately (no clamp of the cosine, see :func:`~tfface.heads.base.unit_angle`).

    Args:
        num_classes: number of identities C.
        scale: s.
        margin: m, in radians, in [0, pi/2].
        h: the concentration h in (0, 1] (0.333: z_hat reaches +-1 three standard deviations off the mean).
        t_alpha: weight of the current batch in the moving statistics, in (0, 1].

    Example:
        >>> head = AdaFace(10)
        >>> logits = head([tf.random.normal((4, 128)), tf.constant([0, 1, 2, 9])], training=True)
    """

    def __init__(self, num_classes: int, scale: float = 64.0, margin: float = 0.4, h: float = 0.333,
                 t_alpha: float = 0.01, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.margin = _check_range("margin", margin, 0.0, math.pi / 2)
        self.h = _check_range("h", h, 0.0, 1.0, low_open=True)
        self.t_alpha = _check_range("t_alpha", t_alpha, 0.0, 1.0, low_open=True)

    def build(self, input_shape):
        super().build(input_shape)
        self.build_state()

    def build_state(self) -> None:
        """The moving statistics (also called by Partial FC, which never builds the head)."""
        def state(name, value):
            return self.add_weight(name=name, shape=(), initializer=keras.initializers.Constant(value),
                                   trainable=False, aggregation="only_first_replica")

        self.batch_mean, self.batch_std = state("batch_mean", 20.0), state("batch_std", 100.0)

    def margin_scaler(self, embeddings: tf.Tensor, training: bool, view: BatchView) -> tf.Tensor:
        """z_hat (B,) from the rows' norms; updates the moving statistics first when ``training``."""
        norms = tf.stop_gradient(tf.clip_by_value(row_norms(embeddings), 0.001, 100.0))
        mean = tf.cast(self.batch_mean, norms.dtype)
        std = tf.cast(self.batch_std, norms.dtype)
        if training:
            count = view.sum_rows(tf.ones_like(norms))
            batch_mean = view.sum_rows(norms) / count
            batch_std = tf.sqrt(view.sum_rows(tf.square(norms - batch_mean)) / tf.maximum(count - 1.0, 1.0))
            mean = self.t_alpha * batch_mean + (1.0 - self.t_alpha) * mean
            std = self.t_alpha * batch_std + (1.0 - self.t_alpha) * std
            self.batch_mean.assign(tf.cast(mean, self.batch_mean.dtype))
            self.batch_std.assign(tf.cast(std, self.batch_std.dtype))
        return tf.clip_by_value(self.h * (norms - mean) / (std + _ADAFACE_EPS), -1.0, 1.0)

    def margin_logits(self, cos, cos_t, theta_t, mask, embeddings, training=False, view=None):
        scaler = self.margin_scaler(tf.cast(embeddings, cos.dtype), training, view or BatchView())
        theta = tf.clip_by_value(theta_t - self.margin * scaler, _ADAFACE_EPS, math.pi - _ADAFACE_EPS)
        target = tf.cos(theta) - (self.margin + self.margin * scaler)
        return self.scale * tf.where(mask, target[:, None], cos)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "h": self.h, "t_alpha": self.t_alpha}


@register_head("magface")
class MagFace(NormalizedHead):
    """MagFace: an angular margin that grows with the feature magnitude, plus its regulariser.

    Paper: "MagFace: A Universal Representation for Face Recognition and Quality Assessment"
    (Meng et al., CVPR 2021), https://arxiv.org/abs/2103.06627, eq. (4)-(6). With the magnitude
    ``a = clip(||x||, l_a, u_a)`` (gradient inside the bounds), the margin is linear in it,
    ``m(a) = (u_m - l_m) / (u_a - l_a) (a - l_a) + l_m``, the target logit is ArcFace's with
    that margin per row (:func:`~tfface.heads.arcface.arc_margin`; ``easy_margin`` as the
    official ``MagLinear``) and the loss adds ``lambda_g g(a)``, ``g(a) = a / u_a^2 + 1 / a``
    (:meth:`feature_loss`, per example; the trainer adds it to the cross-entropy).

    Args:
        num_classes: number of identities C.
        scale: s.
        l_a, u_a: the magnitude bounds, 0 < l_a < u_a.
        l_m, u_m: the margins at l_a and u_a, 0 <= l_m <= u_m <= pi/2.
        lambda_g: weight of the regulariser, >= 0.
        easy_margin: the margin only where cos(theta) > 0 (True, as the official code).
    """

    def __init__(self, num_classes: int, scale: float = 64.0, l_a: float = 10.0, u_a: float = 110.0,
                 l_m: float = 0.45, u_m: float = 0.8, lambda_g: float = 35.0, easy_margin: bool = True, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.u_a = _check_range("u_a", u_a, 0.0, math.inf, low_open=True)
        self.l_a = _check_range("l_a", l_a, 0.0, self.u_a, low_open=True)
        if self.l_a == self.u_a:
            raise ValueError(f"l_a: expected a value below u_a={self.u_a:g}, got {self.l_a:g}")
        self.u_m = _check_range("u_m", u_m, 0.0, math.pi / 2)
        self.l_m = _check_range("l_m", l_m, 0.0, self.u_m)
        self.lambda_g = _check_range("lambda_g", lambda_g, 0.0, math.inf)
        self.easy_margin = bool(easy_margin)

    def magnitude(self, embeddings: tf.Tensor) -> tf.Tensor:
        """a = clip(||x||, l_a, u_a) (B,)."""
        return tf.clip_by_value(row_norms(tf.cast(embeddings, self.compute_dtype)), self.l_a, self.u_a)

    def margin_logits(self, cos, cos_t, theta_t, mask, embeddings, training=False, view=None):
        a = self.magnitude(embeddings)
        margin = (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m
        target = arc_margin(cos_t, theta_t, margin, self.easy_margin)
        return self.scale * tf.where(mask, target[:, None], cos)

    def feature_loss(self, embeddings):
        a = self.magnitude(embeddings)
        return self.lambda_g * (a / self.u_a**2 + 1.0 / a)

    def get_config(self):
        return {**super().get_config(), "l_a": self.l_a, "u_a": self.u_a, "l_m": self.l_m, "u_m": self.u_m,
                "lambda_g": self.lambda_g, "easy_margin": self.easy_margin}

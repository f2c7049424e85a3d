"""SphereFace: A-Softmax, the multiplicative angular margin, with SphereFace-Caffe's annealing."""
from __future__ import annotations

import math

import tensorflow as tf

from tfface.heads.base import Head, gather_targets, safe_sqrt, unit_angle
from tfface.heads.registry import register_head


def _chebyshev_u(m: int, c: tf.Tensor) -> tf.Tensor:
    """U_{m-1}(c), so that d cos(m theta) / d cos(theta) = m * U_{m-1}(cos theta)."""
    return {1: tf.ones_like(c), 2: 2.0 * c, 3: 4.0 * c * c - 1.0, 4: 8.0 * c * c * c - 4.0 * c}[m]


@register_head("sphereface")
class SphereFace(Head):
    """A-Softmax: target logit ``||x|| (lambda cos(theta) + psi(theta)) / (1 + lambda)``.

    Paper: "SphereFace: Deep Hypersphere Embedding for Face Recognition" (Liu et al., CVPR 2017),
    https://arxiv.org/abs/1704.08063.

    Class centres (columns of ``kernel``, (embedding_dim, num_classes)) are L2-normalised, the
    embedding x is not: non-target logits are ``||x|| cos(theta) = x . w``. With margin m and
    ``k = floor(m theta / pi)`` (so theta is in [k pi/m, (k+1) pi/m]),
    ``psi(theta) = (-1)^k cos(m theta) - 2k``, monotonically decreasing on [0, pi].

    ``lambda`` anneals as in SphereFace-Caffe's ``MarginInnerProduct`` layer:
    ``lambda = max(base * (1 + gamma * iteration)^(-power), lambda_min)``, where ``iteration``
    is the layer's own counter (a non-trainable int64 weight, saved in checkpoints). **Every
    call with ``training=True`` first increments the counter** (as Caffe does at each forward),
    so the trainer must call the head exactly once per step with ``training=True``; evaluation
    calls (``training`` False/None) use the current lambda without incrementing.

    Gradient: exact by default. ``normalize_gradient=True`` reproduces the seed's backward:
    writing the gradient of the margin term ``||x|| psi`` w.r.t. x as ``a w + b x`` it uses
    ``(a w + b x) / sqrt(a^2 + b^2)`` (a = psi'(cos), b = (psi - cos psi') / ||x||), and w.r.t.
    the normalised centre it uses the inner-product gradient ``x`` (Caffe's weight gradient), so
    the step size no longer grows with the polynomial's degree.

    Args:
        num_classes: number of identities C.
        margin: m, an integer in {1, 2, 3, 4}.
        base, gamma, power, lambda_min: the annealing schedule above (Caffe's defaults).
        normalize_gradient: the seed's gradient-scale normalisation (see above).
        feature_scale: s > 0 first maps every embedding to ``s x / ||x||`` (SeqFace's A-Softmax
            on features L2-normalised and scaled to 32); 0 takes the embeddings as they are.

    Example:
        >>> head = SphereFace(10, margin=4)
        >>> logits = head([tf.random.normal((4, 512)), tf.constant([0, 1, 2, 9])], training=True)
    """

    def __init__(
        self,
        num_classes: int,
        margin: int = 4,
        base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 5.0,
        normalize_gradient: bool = False,
        feature_scale: float = 0.0,
        **kwargs,
    ):
        super().__init__(num_classes, **kwargs)
        if int(margin) not in (1, 2, 3, 4) or int(margin) != margin:
            raise ValueError(f"margin: expected an integer in {{1, 2, 3, 4}}, got {margin}")
        self.margin = int(margin)
        self.base, self.gamma, self.power = float(base), float(gamma), float(power)
        self.lambda_min = float(lambda_min)
        self.normalize_gradient = bool(normalize_gradient)
        if feature_scale < 0:
            raise ValueError(f"feature_scale: expected s > 0, or 0 for none; got {feature_scale}")
        self.feature_scale = float(feature_scale)

    def build(self, input_shape):
        super().build(input_shape)
        self.iteration = self.add_weight(
            name="iteration", shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )

    def current_lambda(self) -> tf.Tensor:
        """lambda for the current value of the iteration counter."""
        it = tf.cast(self.iteration, self.compute_dtype)
        lam = self.base * tf.pow(1.0 + self.gamma * it, -self.power)
        return tf.maximum(lam, tf.cast(self.lambda_min, self.compute_dtype))

    def _interval(self, theta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """k = floor(m theta / pi) clipped to [0, m-1], and (-1)^k."""
        k = tf.clip_by_value(tf.floor(self.margin * theta / math.pi), 0.0, self.margin - 1.0)
        return k, 1.0 - 2.0 * tf.math.floormod(k, 2.0)

    def psi(self, theta: tf.Tensor) -> tf.Tensor:
        """psi(theta) = (-1)^k cos(m theta) - 2k on [k pi/m, (k+1) pi/m]."""
        k, sign = self._interval(theta)
        return sign * tf.cos(self.margin * theta) - 2.0 * k

    def _margin_term(self, x: tf.Tensor, w_t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``||x|| psi(theta)`` (B,) between rows of x and the unit target centres w_t, ``||x||``, theta."""
        norm = safe_sqrt(tf.reduce_sum(tf.square(x), axis=1))
        theta = unit_angle(x / norm[:, None], w_t)
        return norm * self.psi(theta), norm, theta

    def call(self, inputs, training=None):
        embeddings, labels = inputs
        dtype = self.compute_dtype
        if training:
            self.iteration.assign_add(1)
        lam = self.current_lambda()
        x = tf.cast(embeddings, dtype)
        if self.feature_scale:
            x = self.feature_scale * tf.math.l2_normalize(x, axis=1)
        w = tf.math.l2_normalize(tf.cast(self.kernel, dtype), axis=0)
        xw = tf.matmul(x, w)
        mask, w_t, xw_t = gather_targets(xw, w, labels)
        if self.normalize_gradient:
            psi_term = self._normalized_margin_term(x, w_t)
        else:
            psi_term = self._margin_term(x, w_t)[0]
        target = (lam * xw_t + psi_term) / (1.0 + lam)
        return tf.where(mask, target[:, None], xw)

    def _normalized_margin_term(self, x: tf.Tensor, w_t: tf.Tensor) -> tf.Tensor:
        """``||x|| psi`` with the seed's normalised backward (see the class docstring)."""

        @tf.custom_gradient
        def term(x, w_t):
            value, norm, theta = self._margin_term(x, w_t)

            def grad(upstream):
                _, sign = self._interval(theta)
                c = tf.cos(theta)
                dpsi = sign * self.margin * _chebyshev_u(self.margin, c)
                coeff_w = dpsi
                coeff_x = (self.psi(theta) - c * dpsi) / norm
                scale = upstream / safe_sqrt(coeff_w * coeff_w + coeff_x * coeff_x)
                dx = (scale * coeff_w)[:, None] * w_t + (scale * coeff_x)[:, None] * x
                return dx, upstream[:, None] * x

            return value, grad

        return term(x, w_t)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "base": self.base,
            "gamma": self.gamma,
            "power": self.power,
            "lambda_min": self.lambda_min,
            "normalize_gradient": self.normalize_gradient,
            "feature_scale": self.feature_scale,
        }

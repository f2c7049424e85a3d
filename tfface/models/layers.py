"""Building blocks shared by several backbone families (functional Keras helpers).

Every helper takes a Keras tensor and returns a Keras tensor; ``name`` prefixes the layer
names so that weights can be mapped one-to-one onto the reference implementations.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

#: PReLU slope at initialisation in PyTorch (``nn.PReLU``) and Caffe (``PReLU`` filler).
PRELU_INIT = 0.25


def caffe_xavier() -> keras.initializers.Initializer:
    """Caffe's ``xavier`` filler: uniform in +-sqrt(3 / fan_in)."""
    return keras.initializers.VarianceScaling(1.0, mode="fan_in", distribution="uniform")


def caffe_gaussian(std: float = 0.01) -> keras.initializers.Initializer:
    """Caffe's ``gaussian`` filler (zero mean), used for the convolutions inside residual units."""
    return keras.initializers.RandomNormal(stddev=std)


def _channel_sum(x: tf.Tensor) -> tf.Tensor:
    """Sum over every axis but the last, (C,): a (1, N) x (N, C) product, much faster on CPU
    than ``reduce_sum`` over the leading axes of a 4-D tensor."""
    flat = tf.reshape(x, [-1, tf.shape(x)[-1]])
    return tf.matmul(tf.ones([1, tf.shape(flat)[0]], flat.dtype), flat)[0]


@tf.custom_gradient
def _prelu(x: tf.Tensor, alpha: tf.Tensor):
    """``max(x, 0) + alpha min(x, 0)`` for a per-channel ``alpha``, with a gradient of 2 passes.

    At ``x == 0`` the input gradient is ``alpha dy``, as PyTorch's PReLU (Keras' gives 0)."""
    negative = tf.minimum(x, 0.0)
    y = tf.maximum(x, 0.0) + alpha * negative

    def grad(dy):
        dx = tf.where(x > 0.0, dy, alpha * dy)
        return dx, tf.reshape(_channel_sum(negative * dy), tf.shape(alpha))

    return y, grad


@tf.function(jit_compile=True)
def _prelu_xla_forward(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """:func:`_prelu`'s output (the same values) as one XLA loop over ``x``."""
    return tf.where(x > 0.0, x, alpha * x)


@tf.function(jit_compile=True)
def _prelu_xla_backward(x: tf.Tensor, alpha: tf.Tensor, dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The input gradient and the slope gradient per element, ``min(x, 0) dy``, in one XLA loop
    (XLA's CPU reductions over the leading axes are slow: the per-channel sum is a matmul)."""
    return tf.where(x > 0.0, dy, alpha * dy), tf.minimum(x, 0.0) * dy


@tf.custom_gradient
def _prelu_xla(x: tf.Tensor, alpha: tf.Tensor):
    """:func:`_prelu` with the element-wise work fused by XLA: one pass forward, two backward
    (TensorFlow's own kernels take one pass per op: four forward, six backward)."""

    def grad(dy):
        dx, slope = _prelu_xla_backward(x, alpha, dy)
        return dx, tf.reshape(_channel_sum(slope), tf.shape(alpha))

    return _prelu_xla_forward(x, alpha), grad


def _cpu_only() -> bool:
    """No GPU or TPU: the XLA kernels above are compiled for (and only used on) CPUs."""
    return not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU")


@keras.saving.register_keras_serializable(package="tfface")
class PReLU(layers.PReLU):
    """``keras.layers.PReLU`` (same weights and outputs) with a faster per-channel path.

    Keras computes ``relu(x) - alpha relu(-x)`` and, for the slope gradient, reduces over the
    leading axes of a 4-D tensor, which is slow on CPU; slopes shared over every axis but the
    channels take :func:`_prelu` instead, and, when training on a CPU-only host,
    :func:`_prelu_xla` (inference and exports never contain XLA kernels).
    """

    def call(self, inputs, training=None):
        if self.alpha.shape[:-1].num_elements() != 1 or inputs.shape.rank < 2:
            return super().call(inputs)
        alpha = tf.cast(self.alpha, inputs.dtype)
        if training and _cpu_only():
            return _prelu_xla(inputs, alpha)
        return _prelu(inputs, alpha)


@keras.saving.register_keras_serializable(package="tfface")
class BatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` (same weights and statistics) that trains 4-D
    channels-last inputs with TensorFlow's fused kernel.

    Keras 3 normalises with separate moment, subtract and scale ops, and their gradients;
    the fused op does it in one pass each way (several times faster on CPU). Inference and
    other inputs take Keras' own path, so exported models compute exactly as before. The
    moving averages are updated as Keras does (momentum, biased batch variance).
    """

    def _fused(self, training) -> bool:
        return bool(training) and self.trainable and not self.renorm and not self.synchronized and self.axis in (-1, 3)

    def call(self, inputs, training=None, mask=None):
        if mask is not None or inputs.shape.rank != 4 or not self._fused(training):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels])
        beta = self.beta if self.center else tf.zeros([channels])
        # bfloat16 goes in as it is (the kernel keeps its statistics in float32), the rest as float32.
        x = inputs if inputs.dtype == tf.bfloat16 else tf.cast(inputs, "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(gamma, "float32"), tf.cast(beta, "float32"),
            epsilon=self.epsilon, is_training=True,
        )
        # The fused op returns the unbiased variance; Keras averages the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
        variance *= (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


def prelu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Per-channel PReLU (one slope per channel, shared over H and W), slopes start at 0.25."""
    return PReLU(alpha_initializer=keras.initializers.Constant(PRELU_INIT), shared_axes=[1, 2], name=name)(x)


def conv2d(
    x: keras.KerasTensor,
    filters: int,
    kernel: int,
    stride: int = 1,
    pad: int = 0,
    *,
    name: str,
    use_bias: bool = True,
    kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
) -> keras.KerasTensor:
    """``kernel`` x ``kernel`` convolution with ``pad`` zeros on every side (PyTorch/Caffe style).

    Keras ``padding="same"`` pads asymmetrically (bottom/right only) when the stride is 2 and
    the input size is even, which shifts the sampling grid; here the padding is always
    symmetric. Stride 1 with ``pad == (kernel - 1) // 2`` is exactly ``"same"`` and uses it.
    """
    if stride == 1 and kernel % 2 == 1 and pad == (kernel - 1) // 2:
        padding = "same"
    else:
        padding = "valid"
        if pad:
            x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return layers.Conv2D(
        filters,
        kernel,
        stride,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        name=name,
    )(x)


def prelu_residual_units(
    x: keras.KerasTensor,
    stage: int,
    units: int,
    first_index: int,
    *,
    use_bias: bool = True,
) -> keras.KerasTensor:
    """``units`` BN-free residual units of SphereFace and Wen et al.: ``x + PReLU(conv(PReLU(conv(x))))``.

    Both convolutions are 3x3, stride 1, padding 1, as wide as ``x``, initialised N(0, 0.01)
    like the Caffe models. Layers are named as in Caffe: ``conv{stage}_{k}`` / ``relu{stage}_{k}``
    with ``k`` counting from ``first_index``, and ``res{stage}_{k}`` after the second conv.
    """
    filters = x.shape[-1]
    for unit in range(units):
        shortcut = x
        for k in (first_index + 2 * unit, first_index + 2 * unit + 1):
            x = conv2d(x, filters, 3, 1, 1, name=f"conv{stage}_{k}", use_bias=use_bias, kernel_initializer=caffe_gaussian())
            x = prelu(x, f"relu{stage}_{k}")
        x = layers.Add(name=f"res{stage}_{k}")([shortcut, x])
    return x


def flatten_embedding(
    x: keras.KerasTensor,
    embedding_size: int,
    *,
    kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
    name: str = "embedding",
) -> keras.KerasTensor:
    """Flatten, then a fully connected layer (with bias) to ``embedding_size``, kept in float32.

    Keras flattens (H, W, C) in that order; PyTorch and Caffe flatten (C, H, W): permute the
    rows of the kernel when importing their weights.
    """
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(embedding_size, kernel_initializer=kernel_initializer, dtype="float32", name=name)(x)


class InputShapeError(ValueError):
    """A backbone cannot take this input size (callers map it to their size flags)."""


def check_input_shape(input_shape, family: str) -> tuple[int, int, int]:
    """``input_shape`` as a tuple of 3 positive ints, or an :class:`InputShapeError` naming ``family``."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputShapeError(f"{family} input_shape must be (H, W, C) with positive sizes, got {tuple(input_shape)}")
    return shape


class Backbone(keras.Model):
    """A functional backbone whose constructor arguments are its config (the keras-hub way).

    A subclass builds ``inputs -> outputs`` in its ``__init__`` and ends with
    ``super().__init__(inputs, outputs, config={...constructor arguments...}, name=name)``;
    ``get_config`` returns those arguments (plus ``name``) and ``from_config`` calls the
    constructor with them, so no custom serialisation code is needed.
    """

    def __init__(self, inputs, outputs, *, config: dict, name: str, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        self._constructor_config = dict(config)

    def get_config(self) -> dict:
        return {**self._constructor_config, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> "Backbone":
        return cls(**config)

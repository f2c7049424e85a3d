"""Building blocks shared by several backbone families (functional Keras helpers).

Every helper takes a Keras tensor and returns a Keras tensor; ``name`` prefixes the layer
names so that weights can be mapped one-to-one onto the reference implementations.
"""
from __future__ import annotations

import keras
from keras import layers

#: PReLU slope at initialisation in PyTorch (``nn.PReLU``) and Caffe (``PReLU`` filler).
PRELU_INIT = 0.25


def caffe_xavier() -> keras.initializers.Initializer:
    """Caffe's ``xavier`` filler: uniform in +-sqrt(3 / fan_in)."""
    return keras.initializers.VarianceScaling(1.0, mode="fan_in", distribution="uniform")


def caffe_gaussian(std: float = 0.01) -> keras.initializers.Initializer:
    """Caffe's ``gaussian`` filler (zero mean), used for the convolutions inside residual units."""
    return keras.initializers.RandomNormal(stddev=std)


def prelu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Per-channel PReLU (one slope per channel, shared over H and W), slopes start at 0.25."""
    return layers.PReLU(
        alpha_initializer=keras.initializers.Constant(PRELU_INIT), shared_axes=[1, 2], name=name
    )(x)


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

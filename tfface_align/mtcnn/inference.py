"""Inference forms of the MTCNN nets: the same weights, fewer passes over memory.

The Keras models of :mod:`tfface_align.mtcnn.networks` are the reference (weights load into them
and tests compare them with the ``mtcnn`` package). The detector evaluates them through these
functions, which read the same weights and differ only in how they compute:

* Convolution and PReLU weights enter the graph as constants, read (and transformed as below)
  once while tracing: P-Net's per-level loop runs no weight reads or weight arithmetic. (The
  dense layers of R-Net and O-Net run as the Keras layers.)
* They take raw pixels in [0, 255]: the normalisation ``(pixel - 127.5) / 128`` is folded into
  the first convolution's kernel and bias (exact: that convolution has no padding), so no pass
  over the photo is spent on it.
* PReLU is ``max(x, alpha * x)``, two element-wise passes instead of Keras' four. That form is
  exact for slopes <= 1; a channel with a slope > 1 is increasing, so when a max-pool follows
  (P-Net's and R-Net's first layers) its PReLU, ``min(x, alpha * x)``, moves after the pool,
  onto a quarter of the pixels. Other layers with a slope > 1 keep the general form.
* P-Net's two-way softmax becomes one logit, ``log p(face) - log p(non-face)``:
  ``logit > log(t / (1 - t))`` selects exactly the windows with ``p(face) > t``; the sigmoid and
  the box regression then run on the selected windows only. The logit is a matmul over the
  pixels (oneDNN runs 1x1 convolutions with few outputs ~1.7x slower), and P-Net's last PReLU
  is folded into it through a leaky ReLU that TensorFlow fuses into the convolution before it
  (see :func:`pnet_forward`).

P-Net's activations are the biggest tensors of the whole cascade (a 10-channel copy of every
pyramid level): on CPU, Keras' PReLU passes over them took longer than the convolutions.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

PIXEL_MEAN = 127.5  # the nets see (pixel - PIXEL_MEAN) * PIXEL_SCALE
PIXEL_SCALE = 1.0 / 128.0
LEAKY_SLOPE = 0.5  # stands in for P-Net's last PReLU (a power of two: l / LEAKY_SLOPE is exact)


def _weights(layer: keras.layers.Layer) -> list[np.ndarray]:
    with tf.init_scope():  # the values, also while tracing a graph
        return [np.asarray(w, np.float32) for w in layer.get_weights()]


def _conv(x: tf.Tensor, kernel: np.ndarray, bias: np.ndarray) -> tf.Tensor:
    return tf.nn.conv2d(x, tf.constant(kernel), 1, "VALID") + tf.constant(bias)


def conv(layer: keras.layers.Conv2D, x: tf.Tensor, normalize: bool = False) -> tf.Tensor:
    """``layer(x)`` for an unpadded stride-1 convolution; with ``normalize``, of
    ``(x - PIXEL_MEAN) * PIXEL_SCALE``."""
    if layer.padding != "valid" or tuple(layer.strides) != (1, 1) or layer.activation is not keras.activations.linear:
        raise ValueError(f"{layer.name}: expected an unpadded stride-1 convolution without activation")
    kernel, bias = _weights(layer)
    if normalize:
        kernel = kernel * PIXEL_SCALE
        bias = bias - PIXEL_MEAN * kernel.sum(axis=(0, 1, 2))
    return _conv(x, kernel, bias)


def _scale(x: tf.Tensor, factors: np.ndarray) -> tf.Tensor:
    """``x * factors`` per channel; on feature maps as a 1x1 depthwise convolution, which oneDNN
    runs about 3x faster than TF's broadcasting multiply for these channel counts."""
    factors = np.asarray(factors, np.float32).reshape(-1)
    if x.shape.rank != 4:
        return x * tf.constant(factors)
    return tf.nn.depthwise_conv2d(x, tf.constant(factors.reshape(1, 1, -1, 1)), [1, 1, 1, 1], "VALID")


def prelu(layer: keras.layers.PReLU, x: tf.Tensor) -> tf.Tensor:
    """``layer(x)``, in two element-wise passes when every slope of the layer is <= 1."""
    slopes = _weights(layer)[0]
    if slopes.max() <= 1.0:
        return tf.maximum(x, _scale(x, slopes))
    return tf.nn.relu(x) - _scale(tf.nn.relu(-x), slopes)


def prelu_pool(layer: keras.layers.PReLU, pool: keras.layers.MaxPooling2D, x: tf.Tensor) -> tf.Tensor:
    """``pool(layer(x))`` with the channels of slope > 1 activated after the pool (they are
    increasing, so the pool commutes with their PReLU)."""
    slopes = _weights(layer)[0]
    steep = slopes > 1.0
    if not steep.any():
        return pool(prelu(layer, x), training=False)
    y = pool(tf.maximum(x, _scale(x, np.where(steep, 1.0, slopes))), training=False)  # steep: identity
    return tf.minimum(y, _scale(y, np.where(steep, slopes, 1.0)))  # the others: identity


def trunk(model: keras.Model, pixels: tf.Tensor, last_prelu: bool = True) -> tuple[tf.Tensor, list]:
    """Runs ``model``'s chain of layers up to its last PReLU on raw pixels. Returns that output
    and the head layers after it (in the order of the model's outputs). With ``last_prelu=False``
    stops before the last PReLU, which then comes first among the returned layers."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.PReLU))
    stop = last if last_prelu else last - 1
    x, i = conv(layers[0], pixels, normalize=True), 1
    while i <= stop:
        layer = layers[i]
        pool_next = i + 1 < len(layers) and isinstance(layers[i + 1], keras.layers.MaxPooling2D)
        if isinstance(layer, keras.layers.PReLU) and pool_next:
            x, i = prelu_pool(layer, layers[i + 1], x), i + 2
            continue
        if isinstance(layer, keras.layers.PReLU):
            x = prelu(layer, x)
        elif isinstance(layer, keras.layers.Conv2D):
            x = conv(layer, x)
        else:
            x = layer(x, training=False)
        i += 1
    return x, layers[stop + 1:]


def _leaky_to_prelu(layer: keras.layers.PReLU) -> np.ndarray:
    """``c`` with ``prelu(y) = l + c * min(l, 0)`` for ``l = leaky_relu(y, LEAKY_SLOPE)``, any
    slopes ``a``: below 0, ``prelu(y) = a * y = (a / LEAKY_SLOPE) * l``."""
    return _weights(layer)[0].reshape(-1) / LEAKY_SLOPE - 1.0


def pnet_forward(pnet: keras.Model, pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """P-Net on raw pixels -> ``leaky`` activations (B, h, w, 32) of every window and its face
    logit (B, h, w); :func:`pnet_regression` turns the activations of the windows that pass the
    threshold into box offsets.

    Only 1x1 heads follow P-Net's last PReLU, so it is never computed as such: TensorFlow fuses
    ``l = leaky_relu(y, 1/2)`` into the convolution, and for slopes ``a`` (exactly, as 1/2 is a
    power of two) ``prelu(y) = l + c * min(l, 0)`` with ``c = 2a - 1``, so the logit is
    ``w . l + (w * c) . min(l, 0) + b``: one pass over the activations instead of two."""
    y, (activation, _, probability) = trunk(pnet, pixels, last_prelu=False)
    leaky = tf.nn.leaky_relu(y, LEAKY_SLOPE)
    kernel, bias = _weights(probability)
    w = (kernel[0, 0, :, 1] - kernel[0, 0, :, 0])[:, None]  # the logit log p(face) - log p(non-face)
    flat = tf.reshape(leaky, [-1, w.shape[0]])
    logits = (tf.matmul(flat, tf.constant(w))
              + tf.matmul(tf.minimum(flat, 0.0), tf.constant(w * _leaky_to_prelu(activation)[:, None])))
    return leaky, tf.reshape(logits, tf.shape(leaky)[:-1]) + float(bias[1] - bias[0])


def pnet_regression(pnet: keras.Model, leaky: tf.Tensor) -> tf.Tensor:
    """``leaky`` activations (n, 32) of windows from :func:`pnet_forward` -> their box offsets
    (n, 4): dx1, dy1, dx2, dy2."""
    activation = pnet.get_layer("prelu3")
    features = leaky + tf.constant(_leaky_to_prelu(activation)) * tf.minimum(leaky, 0.0)
    kernel, bias = _weights(pnet.get_layer("conv4-1"))
    return tf.matmul(features, tf.constant(kernel[0, 0])) + tf.constant(bias)


def patch_forward(model: keras.Model, patches: tf.Tensor) -> list[tf.Tensor]:
    """R-Net or O-Net on raw pixel patches -> the model's outputs (probability last)."""
    x, heads = trunk(model, patches)
    return [head(x, training=False) for head in heads]


def logit(probability: float) -> float:
    """``log(p / (1 - p))``, infinite at 0 and 1."""
    if probability <= 0.0:
        return -math.inf
    if probability >= 1.0:
        return math.inf
    return math.log(probability / (1.0 - probability))

"""Inference forms of the MTCNN nets: the same weights, fewer passes over memory.

The Keras models of :mod:`tfface_align.mtcnn.networks` are the reference (weights load into them
and tests compare them with the ``mtcnn`` package). The detector evaluates them through these
functions, which read the same variables and differ only in how they compute:

* PReLU is ``max(x, alpha * x)``, two element-wise passes instead of Keras' four, in every layer
  whose slopes are all <= 1 (where that form is exact); other layers keep the general form.
* P-Net's two-way softmax becomes one logit, ``log p(face) - log p(non-face)``, produced by a
  1x1 convolution merged with the box regression: ``logit > log(t / (1 - t))`` selects exactly
  the windows with ``p(face) > t``, and the sigmoid then runs on the selected windows only.

P-Net's activations are the biggest tensors of the whole cascade (a 10-channel copy of every
pyramid level), so these passes, not the convolutions, dominate its time on CPU.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


def prelu(layer: keras.layers.PReLU, x: tf.Tensor) -> tf.Tensor:
    """``layer(x)`` in two element-wise passes when every slope of the layer is <= 1."""
    alpha = layer.alpha.value
    with tf.init_scope():  # the slopes' values, also while tracing a graph
        exact = float(np.max(layer.alpha.numpy())) <= 1.0
    if exact:
        return tf.maximum(x, x * alpha)
    return tf.nn.relu(x) - alpha * tf.nn.relu(-x)


def trunk(model: keras.Model, x: tf.Tensor) -> tuple[tf.Tensor, list]:
    """Runs ``model``'s chain of layers up to its last PReLU. Returns that output and the head
    layers after it (in the order of the model's outputs)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.PReLU))
    for layer in layers[:last + 1]:
        x = prelu(layer, x) if isinstance(layer, keras.layers.PReLU) else layer(x, training=False)
    return x, layers[last + 1:]


def pnet_forward(pnet: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """P-Net on normalised images -> (B, h, w, 5): dx1, dy1, dx2, dy2 and the face logit."""
    x, (regression, probability) = trunk(pnet, images)
    kernel = tf.concat([regression.kernel.value,
                        probability.kernel.value[..., 1:] - probability.kernel.value[..., :1]], axis=-1)
    bias = tf.concat([regression.bias.value,
                      probability.bias.value[1:] - probability.bias.value[:1]], axis=0)
    return tf.nn.conv2d(x, kernel, 1, "VALID") + bias


def patch_forward(model: keras.Model, patches: tf.Tensor) -> list[tf.Tensor]:
    """R-Net or O-Net on normalised patches -> the model's outputs (probability last)."""
    x, heads = trunk(model, patches)
    return [head(x, training=False) for head in heads]


def logit(probability: float) -> float:
    """``log(p / (1 - p))``, infinite at 0 and 1."""
    if probability <= 0.0:
        return -math.inf
    if probability >= 1.0:
        return math.inf
    return math.log(probability / (1.0 - probability))

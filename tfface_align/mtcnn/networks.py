"""P-Net, R-Net and O-Net of MTCNN as Keras 3 functional models.

Zhang, Zhang, Li and Qiao, 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks" (https://arxiv.org/abs/1604.02878).

Inputs are RGB images normalised to ``(pixel - 127.5) / 128``, in the usual (height, width)
orientation. The original Caffe models were trained on transposed (column-major) images; the
weight converters in :mod:`tfface_align.mtcnn.weights` absorb that, and the ``permute`` layer
before each dense layer reproduces the original flattening order.

Outputs (channel order as in the original models):

* P-Net: ``regression (B, h, w, 4)`` (dx1, dy1, dx2, dy2 in cell units), ``probability (B, h, w, 2)``
  (non-face, face); a 12x12 window with stride 2.
* R-Net (24x24 input): ``regression (B, 4)``, ``probability (B, 2)``.
* O-Net (48x48 input): ``regression (B, 4)``, ``landmarks (B, 10)`` (x1..x5, y1..y5 as fractions of
  the box), ``probability (B, 2)``.
"""
from __future__ import annotations

import keras
from keras import layers

# Layers holding weights, in the order of the weight lists in the `mtcnn` package assets.
PNET_LAYERS = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4-1", "conv4-2")
RNET_LAYERS = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc4", "prelu4", "fc5-1", "fc5-2")
ONET_LAYERS = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
               "fc5", "prelu5", "fc6-1", "fc6-2", "fc6-3")


def _conv_prelu(x, filters: int, kernel: int, name: str, prelu_name: str):
    x = layers.Conv2D(filters, kernel, padding="valid", name=name)(x)
    return layers.PReLU(shared_axes=[1, 2], name=prelu_name)(x)


def _dense_prelu(x, units: int, name: str, prelu_name: str):
    """Flattens in the original (transposed) order, then dense + PReLU."""
    x = layers.Permute((2, 1, 3), name="permute")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(units, name=name)(x)
    return layers.PReLU(name=prelu_name)(x)


def build_pnet() -> keras.Model:
    """P-Net (proposal network): fully convolutional, any input size >= 12x12."""
    inputs = keras.Input((None, None, 3), name="image")
    x = _conv_prelu(inputs, 10, 3, "conv1", "prelu1")
    x = layers.MaxPooling2D(2, 2, padding="same", name="pool1")(x)
    x = _conv_prelu(x, 16, 3, "conv2", "prelu2")
    x = _conv_prelu(x, 32, 3, "conv3", "prelu3")
    regression = layers.Conv2D(4, 1, name="conv4-1")(x)
    probability = layers.Conv2D(2, 1, activation="softmax", name="conv4-2")(x)
    return keras.Model(inputs, [regression, probability], name="pnet")


def build_rnet() -> keras.Model:
    """R-Net (refinement network) on 24x24 patches."""
    inputs = keras.Input((24, 24, 3), name="image")
    x = _conv_prelu(inputs, 28, 3, "conv1", "prelu1")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = _conv_prelu(x, 48, 3, "conv2", "prelu2")
    x = layers.MaxPooling2D(3, 2, padding="valid", name="pool2")(x)
    x = _conv_prelu(x, 64, 2, "conv3", "prelu3")
    x = _dense_prelu(x, 128, "fc4", "prelu4")
    regression = layers.Dense(4, name="fc5-1")(x)
    probability = layers.Dense(2, activation="softmax", name="fc5-2")(x)
    return keras.Model(inputs, [regression, probability], name="rnet")


def build_onet() -> keras.Model:
    """O-Net (output network) on 48x48 patches, with the 5 facial landmarks."""
    inputs = keras.Input((48, 48, 3), name="image")
    x = _conv_prelu(inputs, 32, 3, "conv1", "prelu1")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = _conv_prelu(x, 64, 3, "conv2", "prelu2")
    x = layers.MaxPooling2D(3, 2, padding="valid", name="pool2")(x)
    x = _conv_prelu(x, 64, 3, "conv3", "prelu3")
    x = layers.MaxPooling2D(2, 2, padding="same", name="pool3")(x)
    x = _conv_prelu(x, 128, 2, "conv4", "prelu4")
    x = _dense_prelu(x, 256, "fc5", "prelu5")
    regression = layers.Dense(4, name="fc6-1")(x)
    landmarks = layers.Dense(10, name="fc6-2")(x)
    probability = layers.Dense(2, activation="softmax", name="fc6-3")(x)
    return keras.Model(inputs, [regression, landmarks, probability], name="onet")


BUILDERS = {"pnet": (build_pnet, PNET_LAYERS), "rnet": (build_rnet, RNET_LAYERS),
            "onet": (build_onet, ONET_LAYERS)}

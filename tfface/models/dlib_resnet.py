"""dlib's face recognition ResNet (Davis King, ``dlib_face_recognition_resnet_model_v1``; the
``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``): 150x150 RGB chips -> 128-d.

A 29-conv ResNet without BatchNorm at inference: every conv (with bias) is followed by a
per-channel affine (gamma, beta). Its rules, reproduced exactly:

* padding: a 3x3 stride-1 conv pads 1 ("same"); a strided conv or pool pads 0 ("valid");
* a down block's shortcut is a 2x2/2 average pool of its input, no projection: the residual
  addition (dlib's ``add_prev``) zero-pads both inputs at the END of channels, rows and columns
  to their elementwise larger shape (8x8x128 -> 3x3x256 conv branch + 4x4x128 shortcut = 4x4x256);
* global average pool, then a bias-free fully connected layer.

The last affine of every residual branch starts at gamma = 0 when built from scratch (the block
starts as its shortcut), so the net trains without normalization layers; imported weights
replace it. :mod:`tfface.importers.dlib_resnet` reads the released file into this model.
"""
from __future__ import annotations

import keras
from keras import layers

from tfface.models.layers import InputShapeError
from tfface.models.registry import register_backbone

#: (filters, down) of the 14 residual blocks, input to output: dlib's alevel4 .. alevel0.
BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)
STEM_FILTERS = 32
STEM_KERNEL = 7
MIN_SIDE = 131  # the smallest input whose last down block still has a 3x3 window


@keras.saving.register_keras_serializable(package="tfface")
class ChannelAffine(keras.layers.Layer):
    """``gamma * x + beta`` per channel (dlib's ``affine`` layer, CONV_MODE)."""

    def __init__(self, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer=self.gamma_initializer, name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        return x * keras.ops.cast(self.gamma, x.dtype) + keras.ops.cast(self.beta, x.dtype)

    def get_config(self):
        return {**super().get_config(), "gamma_initializer": keras.initializers.serialize(self.gamma_initializer)}


@keras.saving.register_keras_serializable(package="tfface")
class PaddedAdd(keras.layers.Layer):
    """dlib's ``add_prev``: the sum of two (B, H, W, C) tensors of possibly different shapes, each
    zero-padded at the end of H, W and C to the elementwise larger shape."""

    def compute_output_shape(self, input_shapes):
        a, b = input_shapes
        return (a[0], *[max(x, y) for x, y in zip(a[1:], b[1:])])

    def call(self, inputs):
        a, b = inputs
        target = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

        def pad(x):
            widths = [[0, 0]] + [[0, t - s] for t, s in zip(target, x.shape[1:])]
            return keras.ops.pad(x, widths) if any(w[1] for w in widths) else x

        return pad(a) + pad(b)


def _conv_affine(x, filters: int, kernel: int, stride: int, name: str, gamma_initializer="ones"):
    """dlib's ``affine<con<filters, kernel, kernel, stride, stride>>`` with its padding rule."""
    x = layers.Conv2D(filters, kernel, stride, padding="same" if stride == 1 else "valid", name=f"{name}_conv")(x)
    return ChannelAffine(gamma_initializer, name=f"{name}_affine")(x)


def _block(x, filters: int, down: bool, name: str):
    """``relu(shortcut + affine(conv(relu(affine(conv(x))))))``; shortcut = x, or its 2x2/2 average."""
    y = _conv_affine(x, filters, 3, 2 if down else 1, f"{name}_a")
    y = layers.ReLU(name=f"{name}_a_relu")(y)
    y = _conv_affine(y, filters, 3, 1, f"{name}_b", gamma_initializer="zeros")
    shortcut = layers.AveragePooling2D(2, 2, name=f"{name}_pool")(x) if down else x
    return layers.ReLU(name=f"{name}_relu")(PaddedAdd(name=f"{name}_add")([y, shortcut]))


@keras.saving.register_keras_serializable(package="tfface")
class DlibResNet(keras.Model):
    """dlib's face recognition ResNet: images (B, 150, 150, 3) -> embeddings (B, embedding_size).

    Args:
        input_shape: (H, W, 3), at least 131x131 (four valid 3x3/2 convs must fit) (150x150: the released model).
        embedding_size: output dimension (128 in the released model).
    """

    def __init__(self, input_shape=(150, 150, 3), embedding_size=128, **kwargs):
        input_shape = tuple(input_shape)
        if min(input_shape[:2]) < MIN_SIDE:
            raise InputShapeError(f"dlib_resnet_v1 input_shape: H and W must be at least {MIN_SIDE}, got {input_shape}")
        inputs = keras.Input(input_shape, name="images")
        x = _conv_affine(inputs, STEM_FILTERS, STEM_KERNEL, 2, "stem")
        x = layers.ReLU(name="stem_relu")(x)
        x = layers.MaxPooling2D(3, 2, name="stem_pool")(x)
        for i, (filters, down) in enumerate(BLOCKS):
            x = _block(x, filters, down, f"block{i}")
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        outputs = layers.Dense(embedding_size, use_bias=False, dtype="float32", name="embedding")(x)
        super().__init__(inputs, outputs, name=kwargs.pop("name", "dlib_resnet_v1"), **kwargs)
        self.arguments = {"input_shape": input_shape, "embedding_size": embedding_size}

    def get_config(self):
        return {**self.arguments, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


register_backbone("dlib_resnet_v1", DlibResNet, (150, 150, 3))

"""MobileFaceNet (Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
Verification on Mobile Devices", CCBR 2018, https://arxiv.org/abs/1804.07573), in the layout
of the MultiFace seed (InsightFace_Pytorch): depthwise-separable bottlenecks, a global
depthwise conv (GDC) instead of pooling, a bias-free linear layer and BatchNorm; no biases.
"""
from __future__ import annotations

import keras
from keras import layers

from tfface.models.layers import BatchNormalization, InputShapeError, prelu
from tfface.models.registry import register_backbone

_BN_EPS = 1e-5


def _conv_bn(x, filters, kernel, stride, name, depthwise=False, activation=True):
    """Conv (explicit symmetric padding, no bias) -> BN -> optional per-channel PReLU."""
    pad = (kernel - 1) // 2
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, use_bias=False, name=f"{name}_dw")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, use_bias=False, name=f"{name}_conv")(x)
    x = BatchNormalization(epsilon=_BN_EPS, momentum=0.9, name=f"{name}_bn")(x)
    if activation:
        x = prelu(x, f"{name}_prelu")
    return x


def _bottleneck(x, out_filters, groups, stride, name, residual):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1 (+ identity when ``residual``)."""
    shortcut = x
    x = _conv_bn(x, groups, 1, 1, f"{name}_expand")
    x = _conv_bn(x, groups, 3, stride, f"{name}_depthwise", depthwise=True)
    x = _conv_bn(x, out_filters, 1, 1, f"{name}_project", activation=False)
    if residual:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def _stage(x, filters, groups, num_blocks, name):
    for i in range(num_blocks):
        x = _bottleneck(x, filters, groups, 1, f"{name}_{i}", residual=True)
    return x


@keras.saving.register_keras_serializable(package="tfface")
class MobileFaceNet(keras.Model):
    """MobileFaceNet backbone: images (B, 112, 112, 3) -> embeddings (B, embedding_size).

    Args:
        input_shape: (H, W, 3); H and W must be multiples of 16 (the GDC covers the final
            H/16 x W/16 map; 112x112 gives the published 7x7).
        embedding_size: embedding dimension (512 in the seed).
    """

    def __init__(self, input_shape=(112, 112, 3), embedding_size=512, **kwargs):
        input_shape = tuple(input_shape)
        if input_shape[0] % 16 or input_shape[1] % 16:
            raise InputShapeError(f"MobileFaceNet input_shape: H and W must be multiples of 16, got {input_shape}")
        inputs = keras.Input(input_shape, name="images")
        x = _conv_bn(inputs, 64, 3, 2, "conv1")
        x = _conv_bn(x, 64, 3, 1, "conv2", depthwise=True)
        x = _bottleneck(x, 64, 128, 2, "conv23", residual=False)
        x = _stage(x, 64, 128, 4, "conv3")
        x = _bottleneck(x, 128, 256, 2, "conv34", residual=False)
        x = _stage(x, 128, 256, 6, "conv4")
        x = _bottleneck(x, 128, 512, 2, "conv45", residual=False)
        x = _stage(x, 128, 256, 2, "conv5")
        x = _conv_bn(x, 512, 1, 1, "conv6_sep")
        x = layers.DepthwiseConv2D((input_shape[0] // 16, input_shape[1] // 16), use_bias=False, name="gdc_dw")(x)
        x = BatchNormalization(epsilon=_BN_EPS, momentum=0.9, name="gdc_bn")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(embedding_size, use_bias=False, name="linear")(x)
        outputs = BatchNormalization(epsilon=_BN_EPS, momentum=0.9, dtype="float32", name="embedding")(x)
        super().__init__(inputs, outputs, name=kwargs.pop("name", "mobilefacenet"), **kwargs)
        self.input_shape_config = input_shape
        self.embedding_size = embedding_size

    def get_config(self):
        return {"input_shape": self.input_shape_config, "embedding_size": self.embedding_size, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


register_backbone("mobilefacenet", MobileFaceNet, (112, 112, 3))

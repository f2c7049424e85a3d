"""Inception-ResNet-v1 (Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning", AAAI 2017, https://arxiv.org/abs/1602.07261), in the
layout of the FaceNet seed (davidsandberg/facenet ``src/models/inception_resnet_v1.py``):
TF-slim convolutions without bias followed by BatchNorm with a beta but no gamma (eps 1e-3),
ReLU; residual "up" projections with bias and no BatchNorm; global average pooling, dropout
and a bias-free bottleneck layer + BatchNorm giving the embedding.

Layer names follow the facenet-pytorch port (``conv2d_1a``, ``repeat_1_0_branch1_1``, ...,
``last_linear``, ``last_bn``) so that :mod:`tfface.models.facenet_import` maps weights one to one.
"""
from __future__ import annotations

import keras
from keras import layers

from tfface.models.layers import BatchNormalization, InputShapeError
from tfface.models.registry import register_backbone

BN_EPSILON = 1e-3  # facenet batch_norm_params["epsilon"]
BN_MOMENTUM = 0.995  # facenet batch_norm_params["decay"]
MIN_INPUT_SIZE = 75  # smallest H, W for which the final 3x3/stride-2 reductions stay valid

# (number of blocks, residual scale) of each repeated stage, as in facenet.
REPEAT_1 = (5, 0.17)  # Inception-ResNet-A (block35), 256 channels
REPEAT_2 = (10, 0.10)  # Inception-ResNet-B (block17), 896 channels
REPEAT_3 = (5, 0.20)  # Inception-ResNet-C (block8), 1792 channels


def _conv_bn(x, filters: int, kernel, stride: int, padding: str, name: str, bn_scale: bool):
    """Conv (no bias) -> BatchNorm (beta, gamma only when ``bn_scale``) -> ReLU.

    ``padding`` is ``"valid"`` or ``"same"``; "same" is only used with stride 1 and odd
    kernels, where it pads symmetrically exactly like facenet (slim "SAME") and PyTorch.
    """
    x = layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, scale=bn_scale, name=f"{name}_bn"
    )(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual(x, branches, scale: float, activation: bool, name: str):
    """``relu(x + scale * conv1x1(concat(branches)))``: the up projection has a bias, no BN."""
    mixed = layers.Concatenate(name=f"{name}_concat")(branches)
    up = layers.Conv2D(x.shape[-1], 1, name=f"{name}_conv2d")(mixed)
    up = layers.Rescaling(scale, name=f"{name}_scale")(up)
    x = layers.Add(name=f"{name}_add")([x, up])
    if activation:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def _block35(x, scale: float, name: str, bn_scale: bool):
    """Inception-ResNet-A (facenet ``block35``), 35x35 grid in the paper."""
    b0 = _conv_bn(x, 32, 1, 1, "same", f"{name}_branch0", bn_scale)
    b1 = _conv_bn(x, 32, 1, 1, "same", f"{name}_branch1_0", bn_scale)
    b1 = _conv_bn(b1, 32, 3, 1, "same", f"{name}_branch1_1", bn_scale)
    b2 = _conv_bn(x, 32, 1, 1, "same", f"{name}_branch2_0", bn_scale)
    b2 = _conv_bn(b2, 32, 3, 1, "same", f"{name}_branch2_1", bn_scale)
    b2 = _conv_bn(b2, 32, 3, 1, "same", f"{name}_branch2_2", bn_scale)
    return _residual(x, [b0, b1, b2], scale, True, name)


def _block17(x, scale: float, name: str, bn_scale: bool):
    """Inception-ResNet-B (facenet ``block17``): 1x7 then 7x1 factorised branch."""
    b0 = _conv_bn(x, 128, 1, 1, "same", f"{name}_branch0", bn_scale)
    b1 = _conv_bn(x, 128, 1, 1, "same", f"{name}_branch1_0", bn_scale)
    b1 = _conv_bn(b1, 128, (1, 7), 1, "same", f"{name}_branch1_1", bn_scale)
    b1 = _conv_bn(b1, 128, (7, 1), 1, "same", f"{name}_branch1_2", bn_scale)
    return _residual(x, [b0, b1], scale, True, name)


def _block8(x, scale: float, name: str, bn_scale: bool, activation: bool = True):
    """Inception-ResNet-C (facenet ``block8``): 1x3 then 3x1 factorised branch."""
    b0 = _conv_bn(x, 192, 1, 1, "same", f"{name}_branch0", bn_scale)
    b1 = _conv_bn(x, 192, 1, 1, "same", f"{name}_branch1_0", bn_scale)
    b1 = _conv_bn(b1, 192, (1, 3), 1, "same", f"{name}_branch1_1", bn_scale)
    b1 = _conv_bn(b1, 192, (3, 1), 1, "same", f"{name}_branch1_2", bn_scale)
    return _residual(x, [b0, b1], scale, activation, name)


def _mixed_6a(x, bn_scale: bool):
    """Reduction-A with (k, l, m, n) = (192, 192, 256, 384): 35x35x256 -> 17x17x896."""
    b0 = _conv_bn(x, 384, 3, 2, "valid", "mixed_6a_branch0", bn_scale)
    b1 = _conv_bn(x, 192, 1, 1, "same", "mixed_6a_branch1_0", bn_scale)
    b1 = _conv_bn(b1, 192, 3, 1, "same", "mixed_6a_branch1_1", bn_scale)
    b1 = _conv_bn(b1, 256, 3, 2, "valid", "mixed_6a_branch1_2", bn_scale)
    b2 = layers.MaxPooling2D(3, 2, name="mixed_6a_branch2_pool")(x)
    return layers.Concatenate(name="mixed_6a")([b0, b1, b2])


def _mixed_7a(x, bn_scale: bool):
    """Reduction-B: 17x17x896 -> 8x8x1792."""
    b0 = _conv_bn(x, 256, 1, 1, "same", "mixed_7a_branch0_0", bn_scale)
    b0 = _conv_bn(b0, 384, 3, 2, "valid", "mixed_7a_branch0_1", bn_scale)
    b1 = _conv_bn(x, 256, 1, 1, "same", "mixed_7a_branch1_0", bn_scale)
    b1 = _conv_bn(b1, 256, 3, 2, "valid", "mixed_7a_branch1_1", bn_scale)
    b2 = _conv_bn(x, 256, 1, 1, "same", "mixed_7a_branch2_0", bn_scale)
    b2 = _conv_bn(b2, 256, 3, 1, "same", "mixed_7a_branch2_1", bn_scale)
    b2 = _conv_bn(b2, 256, 3, 2, "valid", "mixed_7a_branch2_2", bn_scale)
    b3 = layers.MaxPooling2D(3, 2, name="mixed_7a_branch3_pool")(x)
    return layers.Concatenate(name="mixed_7a")([b0, b1, b2, b3])


@keras.saving.register_keras_serializable(package="tfface")
class InceptionResnetV1(keras.Model):
    """FaceNet's Inception-ResNet-v1: images (B, 160, 160, 3) -> embeddings (B, embedding_size).

    Paper: Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual
    Connections on Learning" (https://arxiv.org/abs/1602.07261), as used by Schroff et al.,
    "FaceNet: A Unified Embedding for Face Recognition and Clustering"
    (https://arxiv.org/abs/1503.03832) in the davidsandberg/facenet implementation.

    Args:
        input_shape: (H, W, 3), H and W >= 75 (facenet trains at 160x160).
        embedding_size: bottleneck size (facenet: 128 for the 2017 models, 512 for 2018).
        keep_probability: dropout keep probability before the bottleneck (facenet's
            ``--keep_probability``; 1.0 disables dropout). Only active in training.
        bn_scale: False (default) is facenet's TF-slim BatchNorm (beta, no gamma); True adds
            a gamma to every BatchNorm, as in the facenet-pytorch port, whose weights
            :func:`tfface.models.import_facenet_pytorch` loads.

    Example:
        >>> net = InceptionResnetV1(embedding_size=512)
        >>> net(standardized_images).shape  # (B, 512), not L2-normalised
    """

    def __init__(
        self,
        input_shape=(160, 160, 3),
        embedding_size: int = 512,
        keep_probability: float = 0.8,
        bn_scale: bool = False,
        **kwargs,
    ):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or min(input_shape[:2]) < MIN_INPUT_SIZE:
            raise InputShapeError(
                f"InceptionResnetV1 input_shape: expected (H, W, C) with H, W >= {MIN_INPUT_SIZE}, got {input_shape}"
            )
        if not 0.0 < keep_probability <= 1.0:
            raise ValueError(f"InceptionResnetV1 keep_probability: expected a value in (0, 1], got {keep_probability}")
        inputs = keras.Input(input_shape, name="images")
        x = _conv_bn(inputs, 32, 3, 2, "valid", "conv2d_1a", bn_scale)
        x = _conv_bn(x, 32, 3, 1, "valid", "conv2d_2a", bn_scale)
        x = _conv_bn(x, 64, 3, 1, "same", "conv2d_2b", bn_scale)
        x = layers.MaxPooling2D(3, 2, name="maxpool_3a")(x)
        x = _conv_bn(x, 80, 1, 1, "valid", "conv2d_3b", bn_scale)
        x = _conv_bn(x, 192, 3, 1, "valid", "conv2d_4a", bn_scale)
        x = _conv_bn(x, 256, 3, 2, "valid", "conv2d_4b", bn_scale)
        for i in range(REPEAT_1[0]):
            x = _block35(x, REPEAT_1[1], f"repeat_1_{i}", bn_scale)
        x = _mixed_6a(x, bn_scale)
        for i in range(REPEAT_2[0]):
            x = _block17(x, REPEAT_2[1], f"repeat_2_{i}", bn_scale)
        x = _mixed_7a(x, bn_scale)
        for i in range(REPEAT_3[0]):
            x = _block8(x, REPEAT_3[1], f"repeat_3_{i}", bn_scale)
        x = _block8(x, 1.0, "block8", bn_scale, activation=False)
        x = layers.GlobalAveragePooling2D(name="avgpool_1a")(x)
        x = layers.Dropout(1.0 - keep_probability, name="dropout")(x)
        x = layers.Dense(embedding_size, use_bias=False, name="last_linear")(x)
        outputs = BatchNormalization(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM, scale=bn_scale, dtype="float32", name="last_bn"
        )(x)
        super().__init__(inputs, outputs, name=kwargs.pop("name", "inception_resnet_v1"), **kwargs)
        self.input_shape_config = input_shape
        self.embedding_size = embedding_size
        self.keep_probability = keep_probability
        self.bn_scale = bn_scale

    def get_config(self):
        return {
            "input_shape": self.input_shape_config,
            "embedding_size": self.embedding_size,
            "keep_probability": self.keep_probability,
            "bn_scale": self.bn_scale,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


register_backbone("inception_resnet_v1", InceptionResnetV1, (160, 160, 3))

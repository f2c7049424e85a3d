"""Backbones of SeqFace (Hu et al., "SeqFace: Make full use of sequence information for face
recognition", 2018, https://arxiv.org/abs/1803.06524): ResNet-27 and ResNet-64.

SeqFace did not publish its network definitions (its ResNet-27 ``deploy.prototxt`` ships only
inside the downloadable model archive). Its README points to the center-loss code of Wen et al.,
so ``seqface_resnet27`` is that network: Wen, Zhang, Li and Qiao, "A Discriminative Feature
Learning Approach for Deep Face Recognition", ECCV 2016
(https://ydwen.github.io/papers/WenECCV16.pdf), as in ydwen/caffe-face
``face_example/face_deploy.prototxt``. ``seqface_resnet64`` is the SphereFace-64 layout of
:mod:`tfface.models.sphereface` ([3, 8, 16, 3] residual units), registered under its own name.
SeqFace evaluates on 112x96 crops (resize to 144, centre crop); any input size is accepted.
"""
from __future__ import annotations

import functools

import keras
from keras import layers

from tfface.models.layers import Backbone, InputShapeError, caffe_xavier, check_input_shape, conv2d, flatten_embedding, prelu, prelu_residual_units
from tfface.models.registry import register_backbone
from tfface.models.sphereface import SphereFaceNet

#: (channels, residual units) of the four residual stages of Wen et al.'s ResNet-27.
RESNET27_STAGES: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (256, 5), (512, 3))


def _resnet27_feature_size(size: int) -> int:
    """Spatial size after the network: two unpadded 3x3 convs, then (pool, unpadded conv) x 3, pool."""
    size -= 4
    for _ in range(3):
        size = -(-size // 2) - 2
    return -(-size // 2)


@keras.saving.register_keras_serializable(package="tfface")
class SeqFaceResNet27(Backbone):
    """ResNet-27 of Wen et al. (center loss), used by SeqFace: images (B, 112, 96, 3) -> (B, D).

    ``conv1a`` (32) and ``conv1b`` (64) are unpadded 3x3 convolutions; each of the four stages
    (64, 128, 256, 512 channels with 1, 2, 5, 3 residual units) is preceded by a 2x2 stride-2
    max-pool, and stages 3-5 also by an unpadded 3x3 convolution that widens the channels.
    Every convolution has a bias and a per-channel PReLU, there is no BatchNorm; ``fc5`` (named
    ``embedding``, float32) maps the flattened final map (5x4x512 at 112x96) to the embedding.
    Pooling rounds up like Caffe, so odd sizes keep their border row/column.

    Args:
        input_shape: (H, W, C); 112x96x3 in the reference, any size with H, W >= 33 works
            (e.g. 128x128, where ``fc5`` has 18,432 inputs).
        embedding_size: output dimension (512 in the reference).
        frozen_unit_biases: the Caffe model trains the biases of the 24 convolutions inside
            residual units with ``lr_mult: 0`` (kept at zero). True drops those 6,272 biases
            (exactly equivalent); False (default) keeps them trainable.
        name: model name.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (112, 96, 3),
        embedding_size: int = 512,
        frozen_unit_biases: bool = False,
        name: str = "seqface_resnet27",
        **kwargs,
    ):
        input_shape = check_input_shape(input_shape, "SeqFace ResNet-27")
        if min(_resnet27_feature_size(input_shape[0]), _resnet27_feature_size(input_shape[1])) < 1:
            raise InputShapeError(f"SeqFace ResNet-27 input_shape: H and W must be at least 33, got {input_shape}")
        inputs = keras.Input(input_shape, name="images")
        x = conv2d(inputs, 32, 3, name="conv1a", kernel_initializer=caffe_xavier())
        x = prelu(x, "relu1a")
        for stage, (filters, units) in enumerate(RESNET27_STAGES, start=2):
            # stage 2 is entered from conv1b/pool1b, stage s > 2 from conv{s-1}/pool{s-1}
            widen = "conv1b" if stage == 2 else f"conv{stage - 1}"
            x = conv2d(x, filters, 3, name=widen, kernel_initializer=caffe_xavier())
            x = prelu(x, widen.replace("conv", "relu"))
            x = layers.MaxPooling2D(2, 2, padding="same", name=widen.replace("conv", "pool"))(x)
            x = prelu_residual_units(x, stage, units, first_index=1, use_bias=not frozen_unit_biases)
        outputs = flatten_embedding(x, embedding_size, kernel_initializer=caffe_xavier())
        config = {"input_shape": input_shape, "embedding_size": embedding_size, "frozen_unit_biases": frozen_unit_biases}
        super().__init__(inputs, outputs, config=config, name=name, **kwargs)


register_backbone("seqface_resnet27", SeqFaceResNet27, (112, 96, 3))
register_backbone("seqface_resnet64", functools.partial(SphereFaceNet, name="seqface_resnet64"), (112, 96, 3), depth=64)

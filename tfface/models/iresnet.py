"""arcface_torch's IResNets (deepinsight/insightface ``recognition/arcface_torch/backbones/iresnet.py``):
the networks behind InsightFace's released ``backbone.pth`` files, the model-zoo ONNX files
``w600k_r50`` / ``glintr100`` and, block for block, MXNet's ``fresnet`` ``residual_unit_v3``.

Block (``IBasicBlock``): BN -> conv3x3 -> BN -> PReLU -> conv3x3 (the stride) -> BN, plus a
conv1x1 + BN shortcut (``downsample``) wherever the stride or the width changes, so the first
unit of every stage has one. Output: BN -> flatten -> dropout -> FC -> BN (``features``) whose
scale is fixed at 1 (a non-trainable weight). Layer names follow the PyTorch keys with ``_`` for
``.`` (``layer3_5_conv2``, ``layer1_0_downsample_0``), so importers map them one to one.
"""
from __future__ import annotations

import keras
from keras import layers

from tfface.models.insightface_ir import STAGE_FILTERS, check_resnet_arguments
from tfface.models.layers import Backbone, BatchNormalization, conv2d, prelu
from tfface.models.registry import register_backbone

#: Units per stage (64, 128, 256, 512 channels), by depth.
IRESNET_UNITS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
BN_EPS = 1e-5
_BN_MOMENTUM = 0.9  # = PyTorch momentum 0.1


def _bn(x, name: str, **kwargs):
    return BatchNormalization(epsilon=BN_EPS, momentum=_BN_MOMENTUM, name=name, **kwargs)(x)


def _block(x, filters: int, stride: int, name: str):
    """One ``IBasicBlock``; the shortcut is conv1x1/stride + BN when the stride or width changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_downsample_0")(x)
        shortcut = _bn(shortcut, f"{name}_downsample_1")
    y = _bn(x, f"{name}_bn1")
    y = conv2d(y, filters, 3, 1, 1, name=f"{name}_conv1", use_bias=False)
    y = _bn(y, f"{name}_bn2")
    y = prelu(y, f"{name}_prelu")
    y = conv2d(y, filters, 3, stride, 1, name=f"{name}_conv2", use_bias=False)
    y = _bn(y, f"{name}_bn3")
    return layers.Add(name=f"{name}_add")([y, shortcut])


@keras.saving.register_keras_serializable(package="tfface")
class IResNet(Backbone):
    """IResNet backbone: images (B, 112, 112, 3) -> embeddings (B, embedding_size).

    Args:
        input_shape: (H, W, C); H and W must be multiples of 16 (112x112 gives the published
            7x7 final map and a 25,088 -> 512 FC).
        embedding_size: embedding dimension (512 in every release).
        depth: 18, 34, 50, 100 or 200 (units per stage in ``IRESNET_UNITS``).
        keep_probability: dropout keep probability before the FC (arcface_torch's default
            ``dropout=0``: keep 1.0).
        name: model name; ``iresnet{depth}`` when None.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (112, 112, 3),
        embedding_size: int = 512,
        depth: int = 50,
        keep_probability: float = 1.0,
        name: str | None = None,
        **kwargs,
    ):
        input_shape = check_resnet_arguments("IResNet", input_shape, depth, IRESNET_UNITS, keep_probability)
        inputs = keras.Input(input_shape, name="images")
        x = conv2d(inputs, 64, 3, 1, 1, name="conv1", use_bias=False)
        x = _bn(x, "bn1")
        x = prelu(x, "prelu")
        for stage, (filters, units) in enumerate(zip(STAGE_FILTERS, IRESNET_UNITS[depth]), start=1):
            for unit in range(units):
                x = _block(x, filters, 2 if unit == 0 else 1, f"layer{stage}_{unit}")
        x = _bn(x, "bn2")
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dropout(1.0 - keep_probability, name="dropout")(x)
        x = layers.Dense(embedding_size, name="fc")(x)
        features = BatchNormalization(epsilon=BN_EPS, momentum=_BN_MOMENTUM, dtype="float32", name="features")
        outputs = features(x)
        features.gamma.trainable = False  # arcface_torch: features.weight = 1, requires_grad False
        config = {"input_shape": input_shape, "embedding_size": embedding_size, "depth": depth,
                  "keep_probability": keep_probability}
        super().__init__(inputs, outputs, config=config, name=name or f"iresnet{depth}", **kwargs)


for _depth in IRESNET_UNITS:
    register_backbone(f"iresnet{_depth}", IResNet, (112, 112, 3), depth=_depth)

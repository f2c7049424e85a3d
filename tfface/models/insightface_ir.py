"""InsightFace IR and IR-SE ResNets (Deng et al., "ArcFace: Additive Angular Margin Loss for
Deep Face Recognition", CVPR 2019, https://arxiv.org/abs/1801.07698), in the layout of the
MultiFace seed (TreB1eN/InsightFace_Pytorch ``Backbone(num_layers, drop_ratio, mode)``).

"IR" is the improved residual unit of the ArcFace paper (BN-Conv-PReLU-Conv-BN, the stride on
the second convolution); "IR-SE" adds a squeeze-and-excitation module (Hu et al., "Squeeze-and-
Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507) to every unit. The output
layer is BN-Dropout-Flatten-FC-BN ("option E" of the paper).
"""
from __future__ import annotations

import keras
from keras import layers

from tfface.models.layers import Backbone, BatchNormalization, InputShapeError, check_input_shape, conv2d, prelu
from tfface.models.registry import register_backbone

#: Units per stage (64, 128, 256, 512 channels), by depth.
IR_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
STAGE_FILTERS = (64, 128, 256, 512)
_BN_EPS = 1e-5  # PyTorch default, as in the seed
_BN_MOMENTUM = 0.9  # = PyTorch momentum 0.1
_SE_REDUCTION = 16


def _bn(x, name: str):
    return BatchNormalization(epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name=name)(x)


def _squeeze_excitation(x, name: str):
    """x * sigmoid(W2 relu(W1 avgpool(x))), W1/W2 bias-free 1x1 convolutions (C -> C/16 -> C)."""
    filters = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = layers.Conv2D(filters // _SE_REDUCTION, 1, use_bias=False, name=f"{name}_fc1")(s)
    s = layers.ReLU(name=f"{name}_relu")(s)
    s = layers.Conv2D(filters, 1, use_bias=False, activation="sigmoid", name=f"{name}_fc2")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def _ir_unit(x, filters: int, stride: int, se: bool, name: str):
    """BN -> conv3x3 -> PReLU -> conv3x3/stride -> BN (-> SE), plus the shortcut.

    The shortcut subsamples (a 1x1 max-pool with ``stride``) when the channel count is kept,
    else it is a strided bias-free 1x1 convolution followed by BN.
    """
    if x.shape[-1] == filters:
        shortcut = layers.MaxPooling2D(1, stride, name=f"{name}_shortcut_pool")(x) if stride > 1 else x
    else:
        shortcut = layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_shortcut_conv")(x)
        shortcut = _bn(shortcut, f"{name}_shortcut_bn")
    y = _bn(x, f"{name}_bn1")
    y = conv2d(y, filters, 3, 1, 1, name=f"{name}_conv1", use_bias=False)
    y = prelu(y, f"{name}_prelu")
    y = conv2d(y, filters, 3, stride, 1, name=f"{name}_conv2", use_bias=False)
    y = _bn(y, f"{name}_bn2")
    if se:
        y = _squeeze_excitation(y, f"{name}_se")
    return layers.Add(name=f"{name}_add")([shortcut, y])


def check_resnet_arguments(family: str, input_shape, depth: int, units: dict, keep_probability: float):
    """The checked ``input_shape`` of an InsightFace ResNet (``family`` names it in errors): a known
    ``depth`` (a key of ``units``), a keep probability in (0, 1], H and W multiples of 16."""
    if depth not in units:
        raise ValueError(f"{family} depth must be one of {sorted(units)}, got {depth}")
    if not 0.0 < keep_probability <= 1.0:
        raise ValueError(f"keep_probability must be in (0, 1], got {keep_probability}")
    input_shape = check_input_shape(input_shape, family)
    if input_shape[0] % 16 or input_shape[1] % 16:
        raise InputShapeError(f"{family} input_shape: H and W must be multiples of 16, got {input_shape}")
    return input_shape


@keras.saving.register_keras_serializable(package="tfface")
class InsightFaceIR(Backbone):
    """IR / IR-SE ResNet backbone: images (B, 112, 112, 3) -> embeddings (B, embedding_size).

    Input layer conv3x3 (stride 1, no bias) -> BN -> PReLU with 64 channels, then four stages of
    IR units (64, 128, 256, 512 channels; the first unit of each stage has stride 2), then
    BN -> Dropout -> Flatten -> FC (with bias) -> BN (named ``embedding``, float32). All
    other convolutions are bias-free; PReLU slopes are per channel.

    Args:
        input_shape: (H, W, C); H and W must be multiples of 16 (112x112 gives the published
            7x7 final map and a 25,088 -> 512 FC).
        embedding_size: embedding dimension (512 in the seed).
        depth: 50, 100 or 152 (units per stage in ``IR_UNITS``).
        se: True for IR-SE (squeeze-and-excitation in every unit, reduction 16).
        keep_probability: dropout keep probability before the FC; the seed's
            ``drop_ratio=0.6`` is passed to ``nn.Dropout`` as the *drop* probability, i.e.
            keep 0.4.
        name: model name; ``ir_{depth}`` or ``ir_se_{depth}`` when None.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (112, 112, 3),
        embedding_size: int = 512,
        depth: int = 50,
        se: bool = False,
        keep_probability: float = 0.4,
        name: str | None = None,
        **kwargs,
    ):
        input_shape = check_resnet_arguments("IR", input_shape, depth, IR_UNITS, keep_probability)
        inputs = keras.Input(input_shape, name="images")
        x = conv2d(inputs, 64, 3, 1, 1, name="input_conv", use_bias=False)
        x = _bn(x, "input_bn")
        x = prelu(x, "input_prelu")
        for stage, (filters, units) in enumerate(zip(STAGE_FILTERS, IR_UNITS[depth]), start=1):
            for unit in range(units):
                x = _ir_unit(x, filters, 2 if unit == 0 else 1, se, f"stage{stage}_unit{unit + 1}")
        x = _bn(x, "output_bn")
        x = layers.Dropout(1.0 - keep_probability, name="dropout")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(embedding_size, name="fc")(x)
        outputs = BatchNormalization(
            epsilon=_BN_EPS, momentum=_BN_MOMENTUM, dtype="float32", name="embedding"
        )(x)
        config = {
            "input_shape": input_shape,
            "embedding_size": embedding_size,
            "depth": depth,
            "se": se,
            "keep_probability": keep_probability,
        }
        super().__init__(inputs, outputs, config=config, name=name or f"ir_{'se_' if se else ''}{depth}", **kwargs)


for _depth in (50, 100):
    register_backbone(f"ir_{_depth}", InsightFaceIR, (112, 112, 3), depth=_depth, se=False)
    register_backbone(f"ir_se_{_depth}", InsightFaceIR, (112, 112, 3), depth=_depth, se=True)

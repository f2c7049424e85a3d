"""SphereFace networks (Liu et al., "SphereFace: Deep Hypersphere Embedding for Face
Recognition", CVPR 2017, https://arxiv.org/abs/1704.08063): 20, 36 and 64 layers.

Plain residual CNNs without BatchNorm: four stages, each a stride-2 3x3 convolution followed by
residual units ``x + PReLU(conv(PReLU(conv(x))))``, then one fully connected layer (``fc5``).
The 20-layer net follows the released Caffe model (wy1iu/sphereface
``sphereface_model.prototxt``, ported as clcarwin/sphereface_pytorch ``sphere20a``); 36 and 64
use the unit counts of the paper's Table 2 ([2, 4, 8, 2] and [3, 8, 16, 3]) in the same style.
"""
from __future__ import annotations

import keras

from tfface.models.layers import Backbone, caffe_xavier, check_input_shape, conv2d, flatten_embedding, prelu, prelu_residual_units
from tfface.models.registry import register_backbone

#: Residual units per stage, by depth (paper, Table 2).
SPHEREFACE_UNITS: dict[int, tuple[int, int, int, int]] = {
    20: (1, 2, 4, 1),
    36: (2, 4, 8, 2),
    64: (3, 8, 16, 3),
}
_STAGE_FILTERS = (64, 128, 256, 512)


@keras.saving.register_keras_serializable(package="tfface")
class SphereFaceNet(Backbone):
    """SphereFace-20/36/64 backbone: images (B, 112, 96, 3) -> embeddings (B, embedding_size).

    Four stages of 64, 128, 256 and 512 channels; each starts with a 3x3 stride-2 convolution
    (symmetric padding 1, as in Caffe) and PReLU, then ``SPHEREFACE_UNITS[depth]`` residual
    units. All convolutions have biases, every PReLU has one slope per channel (initial 0.25),
    there is no BatchNorm. ``fc5`` (named ``embedding`` here, float32) maps the flattened
    (H/16, W/16, 512) map to the embedding. Weights are initialised like the Caffe model:
    Caffe ``xavier`` for stage convolutions and ``fc5``, N(0, 0.01) inside residual units.

    Args:
        input_shape: (H, W, C); any size is accepted (the published one is 112x96x3). The
            size fixes the input dimension of ``fc5``.
        embedding_size: output dimension (512 in the paper).
        depth: 20, 36 or 64.
        frozen_unit_biases: the Caffe model trains the biases of the convolutions inside
            residual units with ``lr_mult: 0``, so they stay at their zero initialisation.
            True drops those biases (exactly equivalent: 3,712 fewer parameters for
            SphereFace-20); False (default) keeps them trainable as the PyTorch port does.
        name: model name; ``sphereface{depth}`` when None.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (112, 96, 3),
        embedding_size: int = 512,
        depth: int = 20,
        frozen_unit_biases: bool = False,
        name: str | None = None,
        **kwargs,
    ):
        if depth not in SPHEREFACE_UNITS:
            raise ValueError(f"SphereFace depth must be one of {sorted(SPHEREFACE_UNITS)}, got {depth}")
        input_shape = check_input_shape(input_shape, "SphereFace")
        inputs = keras.Input(input_shape, name="images")
        x = inputs
        for stage, (filters, units) in enumerate(zip(_STAGE_FILTERS, SPHEREFACE_UNITS[depth]), start=1):
            x = conv2d(x, filters, 3, 2, 1, name=f"conv{stage}_1", kernel_initializer=caffe_xavier())
            x = prelu(x, f"relu{stage}_1")
            x = prelu_residual_units(x, stage, units, first_index=2, use_bias=not frozen_unit_biases)
        outputs = flatten_embedding(x, embedding_size, kernel_initializer=caffe_xavier())
        config = {
            "input_shape": input_shape,
            "embedding_size": embedding_size,
            "depth": depth,
            "frozen_unit_biases": frozen_unit_biases,
        }
        super().__init__(inputs, outputs, config=config, name=name or f"sphereface{depth}", **kwargs)


for _depth in SPHEREFACE_UNITS:
    register_backbone(f"sphereface{_depth}", SphereFaceNet, (112, 96, 3), depth=_depth)

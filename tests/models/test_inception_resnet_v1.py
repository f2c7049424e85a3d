"""Inception-ResNet-v1 (facenet): exact size, facenet's layout, options and input checks."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from tfface.models import get_backbone, list_backbones
from tfface.models.inception_resnet_v1 import InceptionResnetV1

# /work/shared/reference/param_counts.json, measured on the reference implementations.
FACENET_TOTAL, FACENET_TRAINABLE, FACENET_NON_TRAINABLE = 23_497_424, 23_467_824, 29_600
FACENET_PYTORCH_TOTAL = 23_512_224
# 14,800 BatchNorm gammas that facenet's TF-slim BatchNorm does not have.
BN_GAMMAS = 14_800


def _count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


@pytest.fixture(scope="module")
def net() -> InceptionResnetV1:
    return get_backbone("inception_resnet_v1")


def test_registered_with_facenet_input_size(net):
    assert "inception_resnet_v1" in list_backbones()
    assert isinstance(net, InceptionResnetV1)
    assert net.input_shape == (None, 160, 160, 3)
    assert net.output_shape == (None, 512)


def test_parameter_counts_equal_facenet(net):
    assert net.count_params() == FACENET_TOTAL
    assert _count(net.trainable_weights) == FACENET_TRAINABLE
    assert _count(net.non_trainable_weights) == FACENET_NON_TRAINABLE


def test_bn_scale_parameter_count_equals_facenet_pytorch():
    ported = get_backbone("inception_resnet_v1", bn_scale=True)
    assert ported.count_params() == FACENET_PYTORCH_TOTAL
    assert ported.count_params() - FACENET_TOTAL == BN_GAMMAS
    assert _count(ported.non_trainable_weights) == FACENET_NON_TRAINABLE


def test_facenet_layout(net):
    """Grid sizes at 160x160 and the slim BatchNorm (beta only, eps 1e-3, decay 0.995)."""
    assert net.get_layer("conv2d_4b_relu").output.shape[1:] == (17, 17, 256)
    assert net.get_layer("mixed_6a").output.shape[1:] == (8, 8, 896)
    assert net.get_layer("mixed_7a").output.shape[1:] == (3, 3, 1792)
    assert net.get_layer("block8_add").output.shape[1:] == (3, 3, 1792)
    bns = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 6 + 5 * 6 + 4 + 10 * 4 + 7 + 6 * 4 + 1  # stem, A, red-A, B, red-B, C, bottleneck
    assert all(not bn.scale and bn.center and bn.epsilon == 1e-3 and bn.momentum == 0.995 for bn in bns)
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    up_projections = [conv for conv in convs if conv.name.endswith("_conv2d")]
    assert len(up_projections) == 5 + 10 + 6 and all(conv.use_bias for conv in up_projections)
    assert not any(conv.use_bias for conv in convs if conv not in up_projections)
    assert not net.get_layer("last_linear").use_bias
    assert net.get_layer("last_bn").dtype_policy.compute_dtype == "float32"
    scales = {layer.name.split("_scale")[0]: layer.scale for layer in net.layers if layer.name.endswith("_scale")}
    assert scales["repeat_1_4"] == 0.17 and scales["repeat_2_9"] == 0.10 and scales["repeat_3_0"] == 0.20
    assert scales["block8"] == 1.0
    assert "block8_relu" not in [layer.name for layer in net.layers]  # the last block is linear


def test_embedding_size_keep_probability_and_small_input():
    small = get_backbone("inception_resnet_v1", input_shape=(96, 96, 3), embedding_size=128, keep_probability=0.6)
    assert small.get_layer("dropout").rate == pytest.approx(0.4)
    images = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype("float32")
    assert small(images, training=False).shape == (2, 128)
    assert small.get_config()["keep_probability"] == 0.6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (64, 64, 3)}, ">= 75"),
        ({"input_shape": (160, 160)}, "(H, W, C)"),
        ({"keep_probability": 0.0}, "keep_probability"),
        ({"keep_probability": 1.5}, "keep_probability"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InceptionResnetV1(**kwargs)

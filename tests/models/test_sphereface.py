"""SphereFace specifics (the shared battery in test_backbones.py covers the rest)."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from tfface.models import get_backbone
from tfface.models.layers import PRELU_INIT, conv2d
from tfface.models.sphereface import SPHEREFACE_UNITS, SphereFaceNet


@pytest.mark.parametrize("depth", sorted(SPHEREFACE_UNITS))
def test_depth_counts_conv_layers(depth):
    # SphereFace-N has N convolutions, then fc5; the structure does not depend on the size
    model = SphereFaceNet(input_shape=(32, 32, 3), depth=depth)
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]) == depth
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)] == ["embedding"]
    assert model.name == f"sphereface{depth}"


def test_sphereface20_layout():
    model = get_backbone("sphereface20")
    assert model.get_layer("flatten").input.shape[1:] == (7, 6, 512)
    assert model.get_layer("embedding").kernel.shape == (7 * 6 * 512, 512)
    assert [model.get_layer(f"conv{s}_1").strides for s in range(1, 5)] == [(2, 2)] * 4
    prelu = model.get_layer("relu1_1")
    assert prelu.alpha.shape == (1, 1, 64)  # one slope per channel
    np.testing.assert_allclose(prelu.alpha.numpy(), PRELU_INIT)


def test_frozen_unit_biases_drops_the_caffe_lr_mult_0_biases():
    model = get_backbone("sphereface20", frozen_unit_biases=True)
    assert model.count_params() == 22_670_656 - 3_712
    assert model.get_layer("conv1_2").bias is None
    assert model.get_layer("conv1_1").bias is not None  # stage convolutions keep theirs
    assert SphereFaceNet.from_config(model.get_config()).count_params() == model.count_params()


def test_any_input_size():
    model = get_backbone("sphereface20", input_shape=(64, 64, 3), embedding_size=128)
    out = model(np.zeros((1, 64, 64, 3), "float32"))
    assert out.shape == (1, 128)
    assert model.get_layer("embedding").kernel.shape == (4 * 4 * 512, 128)


@pytest.mark.parametrize("kwargs", [{"depth": 18}, {"input_shape": (112, 96)}, {"input_shape": (0, 96, 3)}])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SphereFaceNet(**kwargs)


def test_conv2d_pads_symmetrically_like_pytorch():
    # 3x3 stride-2 pad-1 on an even size: PyTorch/Caffe sample rows 0, 2, 4 of the padded
    # input; Keras "same" would pad only at the bottom and shift the grid.
    images = np.arange(36, dtype="float32").reshape(1, 6, 6, 1)
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, conv2d(inputs, 1, 3, 2, 1, name="c", use_bias=False, kernel_initializer="ones"))
    padded = np.pad(images[0, :, :, 0], 1)
    expected = np.array([[padded[i : i + 3, j : j + 3].sum() for j in (0, 2, 4)] for i in (0, 2, 4)])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(images))[0, :, :, 0], expected)

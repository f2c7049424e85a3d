"""IR / IR-SE specifics (the shared battery in test_backbones.py covers the rest)."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from tfface.models.insightface_ir import IR_UNITS, InsightFaceIR


@pytest.fixture(scope="module")
def ir_se_50_small() -> InsightFaceIR:
    # 32x32 keeps every layer of IR-SE-50 but makes the final map 2x2
    return InsightFaceIR(input_shape=(32, 32, 3), depth=50, se=True)


def _layers(model, cls, suffix=""):
    return [layer for layer in model.layers if isinstance(layer, cls) and layer.name.endswith(suffix)]


def test_units_shortcuts_and_se(ir_se_50_small):
    model = ir_se_50_small
    units = sum(IR_UNITS[50])
    assert len(_layers(model, keras.layers.Add)) == units
    assert len(_layers(model, keras.layers.Multiply)) == units  # one SE per unit
    # the channel count changes at stages 2-4 only: 1x1 conv + BN there, subsampling at stage 1
    assert [layer.name for layer in _layers(model, keras.layers.Conv2D, "_shortcut_conv")] == [
        f"stage{s}_unit1_shortcut_conv" for s in (2, 3, 4)
    ]
    assert [layer.name for layer in _layers(model, keras.layers.MaxPooling2D)] == ["stage1_unit1_shortcut_pool"]
    se_fc1 = model.get_layer("stage4_unit1_se_fc1")
    assert se_fc1.kernel.shape == (1, 1, 512, 32) and se_fc1.bias is None
    assert model.get_layer("flatten").input.shape[1:] == (2, 2, 512)


def test_output_layer_and_dropout(ir_se_50_small):
    model = ir_se_50_small
    assert model.get_layer("dropout").rate == pytest.approx(0.6)  # seed: Dropout(drop_ratio=0.6)
    assert model.get_layer("fc").bias is not None
    assert model.layers[-1].name == "embedding" and isinstance(model.layers[-1], keras.layers.BatchNormalization)
    images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    # inference is deterministic; training applies dropout
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))


def test_stride_2_conv_is_symmetrically_padded(ir_se_50_small):
    model = ir_se_50_small
    assert model.get_layer("stage1_unit1_conv2").padding == "valid"
    assert model.get_layer("stage1_unit1_conv2_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("stage1_unit1_conv1").padding == "same"  # stride 1: same as pad 1


def test_keep_probability_round_trips():
    model = InsightFaceIR(input_shape=(16, 16, 3), embedding_size=8, keep_probability=0.8, name="tiny")
    assert model.get_layer("dropout").rate == pytest.approx(0.2)
    assert InsightFaceIR.from_config(model.get_config()).get_layer("dropout").rate == pytest.approx(0.2)


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 34}, {"input_shape": (112, 100, 3)}, {"keep_probability": 0.0}, {"keep_probability": 1.5}],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        InsightFaceIR(**kwargs)

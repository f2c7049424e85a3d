"""SeqFace specifics (the shared battery in test_backbones.py covers the rest)."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from tfface.models import get_backbone
from tfface.models.seqface import SeqFaceResNet27
from tfface.models.sphereface import SphereFaceNet


def test_resnet27_has_27_convolutions_and_fc5():
    model = get_backbone("seqface_resnet27")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 27
    assert model.get_layer("flatten").input.shape[1:] == (5, 4, 512)
    assert model.get_layer("embedding").kernel.shape == (10240, 512)


def test_resnet27_at_128x128_matches_reference_count():
    # param_counts.json note: 31,737,376 at 128x128 (fc5 has 6*6*512 inputs)
    assert get_backbone("seqface_resnet27", input_shape=(128, 128, 3)).count_params() == 31_737_376


def test_resnet27_pools_round_up_like_caffe():
    # 113x97: floor pooling would end at 5x4, Caffe's ceil pooling at 6x5
    model = SeqFaceResNet27(input_shape=(113, 97, 3), embedding_size=8)
    assert model.get_layer("flatten").input.shape[1:] == (6, 5, 512)
    assert model(np.zeros((1, 113, 97, 3), "float32")).shape == (1, 8)


def test_resnet27_frozen_unit_biases():
    model = SeqFaceResNet27(frozen_unit_biases=True)
    assert model.count_params() == 27_543_072 - 6_272
    assert model.get_layer("conv5_6").bias is None
    assert model.get_layer("conv4").bias is not None


def test_resnet27_rejects_too_small_inputs():
    SeqFaceResNet27(input_shape=(33, 33, 3), embedding_size=8)  # smallest that works
    with pytest.raises(ValueError, match="at least 33"):
        SeqFaceResNet27(input_shape=(32, 96, 3))


def test_resnet64_is_the_sphereface64_layout():
    model = get_backbone("seqface_resnet64", input_shape=(32, 32, 3))
    assert isinstance(model, SphereFaceNet)
    assert model.name == "seqface_resnet64" and model.get_config()["depth"] == 64
    reference = get_backbone("sphereface64", input_shape=(32, 32, 3))
    assert [w.shape for w in model.weights] == [w.shape for w in reference.weights]
    assert SphereFaceNet.from_config(model.get_config()).name == "seqface_resnet64"

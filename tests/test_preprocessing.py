import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.core import preprocessing


def _reference(name, x):
    x = x.astype(np.float64)
    if name == "fixed_image_standardization":
        return (x - 127.5) / 128.0
    if name == "minus_one_to_one":
        return (x - 127.5) / 127.5
    if name == "scale_1_128":
        return x / 128.0
    if name == "dlib":  # dlib's input_rgb_image_sized: (pixel - mean of its channel) / 256, R, G, B
        return (x - np.array([122.782, 117.001, 104.298])) / 256.0
    mean, std = x.mean(), x.std()
    return (x - mean) / max(std, 1.0 / np.sqrt(x.size))


@pytest.mark.parametrize("name", sorted(preprocessing.STANDARDIZATIONS))
def test_values_eager_and_in_tf_data(name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 6, 3)).astype(np.uint8)
    fn = preprocessing.get_standardization(name)
    batch = fn(images).numpy()
    in_data = np.stack(list(tf.data.Dataset.from_tensor_slices(images).map(fn).as_numpy_iterator()))
    for i, image in enumerate(images):
        np.testing.assert_allclose(batch[i], _reference(name, image), atol=1e-5)
        np.testing.assert_allclose(in_data[i], _reference(name, image), atol=1e-5)


def test_prewhiten_flat_image_is_finite():
    out = preprocessing.prewhiten(np.full((4, 4, 3), 77, np.uint8)).numpy()
    np.testing.assert_array_equal(out, np.zeros_like(out))


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="unknown standardization 'nope'"):
        preprocessing.get_standardization("nope")


def test_standardize_layer_round_trips_and_stays_float32():
    layer = preprocessing.Standardize("minus_one_to_one")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.standardization == "minus_one_to_one"
    x = np.array([[[[0, 127.5, 255]]]], np.float32)
    np.testing.assert_allclose(clone(x).numpy(), [[[[-1, 0, 1]]]])
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert preprocessing.Standardize()(x).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mean_image_layer_subtracts_its_image_and_round_trips():
    layer = preprocessing.MeanImage((2, 3, 3))
    mean = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    layer.set_weights([mean])
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.mean_shape == (2, 3, 3) and not clone.trainable_weights
    x = np.full((1, 2, 3, 3), 20.0, np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), x - mean)

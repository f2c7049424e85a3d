"""The detector's inference forms of the nets (raw pixels in) equal the Keras reference models."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface_align.mtcnn import build_net
from tfface_align.mtcnn.inference import (
    _leaky_to_prelu,
    logit,
    patch_forward,
    pnet_forward,
    pnet_regression,
    prelu,
    prelu_pool,
)


@pytest.mark.parametrize("slopes", [[-1.3, 0.0, 0.4, 1.0], [-0.5, 0.2, 1.25, 3.0]])
def test_prelu_matches_numpy_for_any_slopes(slopes):
    layer = keras.layers.PReLU(shared_axes=[1, 2])
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 4)).astype(np.float32)
    layer.build(x.shape)
    layer.set_weights([np.asarray(slopes, np.float32).reshape(1, 1, 4)])
    expected = np.where(x > 0, x, x * np.asarray(slopes, np.float32))
    np.testing.assert_allclose(prelu(layer, tf.constant(x)), expected, rtol=1e-6, atol=1e-7)
    traced = tf.function(lambda t: prelu(layer, t))  # the slopes are read while tracing too
    np.testing.assert_allclose(traced(tf.constant(x)), expected, rtol=1e-6, atol=1e-7)
    # Followed by a max-pool (channels of slope > 1 are activated after it).
    pool = keras.layers.MaxPooling2D(3, 2, padding="same")
    np.testing.assert_allclose(prelu_pool(layer, pool, tf.constant(x)), pool(expected), rtol=1e-6, atol=1e-7)
    # From the leaky ReLU (slope 1/2) that P-Net's head uses instead of its last PReLU.
    leaky = np.where(x > 0, x, 0.5 * x)
    np.testing.assert_allclose(leaky + _leaky_to_prelu(layer) * np.minimum(leaky, 0), expected, rtol=1e-6, atol=1e-7)


def _pixels(shape, seed):
    """Raw pixels in [0, 255] and the normalised input of the Keras models."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape).astype(np.float32)
    return pixels, (pixels - 127.5) / 128.0


def test_pnet_logit_and_regression_match_keras():
    net = build_net("pnet")
    pixels, x = _pixels((2, 67, 81, 3), 1)
    regression, probability = (np.asarray(t) for t in net(x))
    activations, logits = (np.asarray(t) for t in pnet_forward(net, tf.constant(pixels)))
    offsets = np.asarray(pnet_regression(net, tf.constant(activations.reshape(-1, activations.shape[-1]))))
    np.testing.assert_allclose(offsets.reshape(regression.shape), regression, atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), probability[..., 1], atol=1e-6)
    # Thresholding the logit picks the same windows as thresholding the probability.
    assert np.array_equal(logits > logit(0.6), probability[..., 1] > 0.6)


@pytest.mark.parametrize("name,size", [("rnet", 24), ("onet", 48)])
def test_patch_nets_match_keras(name, size):
    net = build_net(name)
    pixels, x = _pixels((7, size, size, 3), 2)
    for ours, reference in zip(patch_forward(net, tf.constant(pixels)), net(x)):
        np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_logit_bounds():
    assert logit(0.0) == -np.inf and logit(1.0) == np.inf
    assert logit(0.5) == 0.0
    np.testing.assert_allclose(logit(0.7), np.log(0.7 / 0.3))

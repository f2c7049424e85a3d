"""Tiny learning test per head: an MLP on separable synthetic embeddings learns to classify them."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface import heads

C, IN_DIM, EMB_DIM, STEPS = 6, 12, 8, 250

HEADS = {
    "softmax": {},
    "normface": {"scale": 16.0},
    "sphereface": {"margin": 4, "base": 100.0},
    "cosface": {"scale": 16.0, "margin": 0.2},
    "arcface": {"scale": 16.0, "margin": 0.3},
    "combined": {"scale": 16.0, "m1": 1.0, "m2": 0.2, "m3": 0.1},
    "multihead": {"head_name": "arcface", "num_heads": 2, "scale": 16.0, "margin": 0.3},
}


def make_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(123).normal(size=(C, IN_DIM)) * 2.0
    labels = rng.integers(0, C, n)
    x = means[labels] + rng.normal(size=(n, IN_DIM)) * 0.6
    return x.astype("float32"), labels.astype("int32")


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_learns_separable_classes(name):
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((IN_DIM,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(EMB_DIM)])
    head = heads.get_head(name, C, **HEADS[name])
    head([mlp(tf.zeros((1, IN_DIM))), tf.constant([0])])
    variables = mlp.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.Adam(0.01)
    x_train, y_train = make_data(1024, 1)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = head([mlp(x, training=True), y], training=True)
            loss = tf.reduce_mean(heads.head_loss(y, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(2)
    for _ in range(STEPS):
        idx = rng.integers(0, len(x_train), 64)
        step(x_train[idx], y_train[idx])

    x_test, y_test = make_data(512, 3)
    # Predictions without labels (-1: no margin), as at test time.
    logits = head([mlp(x_test), -tf.ones(len(y_test), tf.int32)])
    accuracy = float(np.mean(heads.head_predictions(logits).numpy() == y_test))
    assert accuracy > 0.95, (name, accuracy)
    if name == "sphereface":
        assert int(head.iteration.numpy()) == STEPS

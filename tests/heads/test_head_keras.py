"""Heads as Keras layers: mixed precision, serialization, SavedModel, checkpoints, degenerate angles."""
from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface import heads

D, C = 8, 5

HEAD_KWARGS = {
    "softmax": {},
    "normface": {},
    "sphereface": {"margin": 4},
    "cosface": {"margin": 0.35},
    "arcface": {"margin": 0.5},
    "combined": {"m1": 0.95, "m2": 0.3, "m3": 0.2},
    "multihead": {"head_name": "cosface", "num_heads": 2, "margin": 0.3},
    "adaface": {"margin": 0.4, "t_alpha": 0.5},
    "magface": {"l_a": 1.0, "u_a": 10.0},
    "curricularface": {"margin": 0.5, "momentum": 0.5},
    "subcenter_arcface": {"centres_per_class": 3},
}


def test_registry_lists_every_head():
    assert sorted(HEAD_KWARGS) == heads.list_heads()
    with pytest.raises(ValueError, match="unknown head"):
        heads.get_head("nope", 3)


def head_model(name: str) -> keras.Model:
    emb = keras.Input((D,), name="embeddings")
    labels = keras.Input((), dtype="int32", name="labels")
    logits = heads.get_head(name, C, **HEAD_KWARGS[name])([emb, labels])
    return keras.Model([emb, labels], logits)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", sorted(HEAD_KWARGS))
def test_float16_policy_finite_at_scale_64_large_c(name, mixed_precision):
    """Under mixed_float16: float32 kernel and logits, finite loss and gradients at s=64, C=20000."""
    num_classes = 20000
    kwargs = dict(HEAD_KWARGS[name])
    if name not in ("softmax", "sphereface"):
        kwargs["scale"] = 64.0
    head = heads.get_head(name, num_classes, **kwargs)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(16, 64)) * 30.0, tf.float16)  # large-norm float16 embeddings
    labels = tf.constant(np.r_[0, num_classes - 1, rng.integers(0, num_classes, 14)], tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = head([x, labels], training=True)
        loss = tf.reduce_mean(heads.head_loss(labels, logits))
    grads = tape.gradient(loss, [x] + head.trainable_variables)
    assert logits.dtype == tf.float32
    assert all(v.dtype == "float32" for v in head.trainable_variables)
    assert np.isfinite(loss.numpy())
    assert np.all(np.isfinite(logits.numpy()))
    for g in grads:
        assert np.all(np.isfinite(tf.convert_to_tensor(g).numpy()))


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "sphereface", "normface", "adaface", "magface",
                                  "curricularface"])
def test_finite_gradients_at_theta_exactly_0_and_pi(name):
    head = heads.get_head(name, C, **HEAD_KWARGS[name])
    head.build([(None, D), (None,)])
    w = tf.math.l2_normalize(head.kernel, axis=0).numpy()
    x = tf.constant(np.stack([2.0 * w[:, 1], -3.0 * w[:, 2]]), tf.float32)  # theta = 0 and theta = pi
    labels = tf.constant([1, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(heads.head_loss(labels, head([x, labels], training=True)))
    gx, gk = tape.gradient(loss, [x, head.kernel.value])
    assert np.isfinite(loss.numpy())
    assert np.all(np.isfinite(gx.numpy())) and np.all(np.isfinite(gk.numpy()))


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(6, D)).astype("float32"), np.array([0, 1, 2, 3, 4, 0], "int32")]


@pytest.mark.parametrize("name", sorted(HEAD_KWARGS))
def test_keras_serialization_round_trip(name, tmp_path):
    model = head_model(name)
    head = model.layers[-1]
    if name == "sphereface":
        head.iteration.assign(123)
    config = keras.saving.serialize_keras_object(head)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(head) and clone.get_config() == head.get_config()
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = _inputs()
    np.testing.assert_allclose(loaded(inputs).numpy(), model(inputs).numpy(), rtol=1e-6, atol=1e-5)
    if name == "sphereface":
        assert int(loaded.layers[-1].iteration.numpy()) == 123


@pytest.mark.parametrize("name", sorted(HEAD_KWARGS))
def test_savedmodel_export_and_checkpoint_restore(name, tmp_path):
    model = head_model(name)
    head = model.layers[-1]
    inputs = _inputs()
    for _ in range(7):
        head(inputs, training=True)
    want = model(inputs).numpy()
    export_dir = os.path.join(tmp_path, "saved")
    model.export(export_dir, verbose=False)
    reloaded = tf.saved_model.load(export_dir)
    np.testing.assert_allclose(reloaded.serve(inputs).numpy(), want, rtol=1e-6, atol=1e-5)

    ckpt_prefix = tf.train.Checkpoint(head=head).save(os.path.join(tmp_path, "ckpt", "head"))
    fresh = head_model(name).layers[-1]
    tf.train.Checkpoint(head=fresh).restore(ckpt_prefix).assert_existing_objects_matched()
    np.testing.assert_allclose(fresh(inputs).numpy(), want, rtol=1e-6, atol=1e-5)
    if name == "sphereface":
        assert int(fresh.iteration.numpy()) == 7
        assert float(fresh.current_lambda()) == pytest.approx(float(head.current_lambda()))

"""The shared backbone battery, run over every registered backbone (and every ``@variant`` of
``param_counts.json``): forward shape, exact parameter counts, config round-trip, ``.keras``
and SavedModel round-trips, mixed precision, and one training step under MirroredStrategy.

A new backbone is covered as soon as it is registered; it needs an entry in
``param_counts.json`` beside this file (a copy of ``../shared/reference/param_counts.json``:
counts measured on the reference implementations). Each backbone is built once (the
module-scoped ``built`` fixture) and shared by its tests; heavy backbones are marked ``slow``.
"""
from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.models import default_input_shape, get_backbone, list_backbones

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "param_counts.json")
SHARED_REFERENCE = os.path.join(HERE, "..", "..", "..", "shared", "reference", "param_counts.json")
EMBEDDING_SIZE = 512
#: Backbones whose battery takes ~30 s or more on 2 CPU cores (measured 2026-11-23, light load:
#: ir_se_100 52 s, inception_resnet_v1 27-39, ir_100 37, ir_se_50 27; ir_50, sphereface64,
#: seqface_resnet64 22-23; mobilefacenet 16; sphereface20/36, seqface_resnet27 8-14; all: 5 min).
SLOW = {"inception_resnet_v1", "ir_100", "ir_se_100", "ir_se_50"}
#: Deep members of a family whose shallower members run the whole battery (iresnet18/34 stack the
#: same blocks): only their parameter counts are checked, to keep CI within its budget.
COUNT_ONLY = {"iresnet50", "iresnet100", "iresnet200"}
# Keras' saving code calls np.array(variable); numpy 2 warns once per variable.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _load_reference(path: str) -> dict:
    with open(path) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


REFERENCE_COUNTS = _load_reference(REFERENCE)


def _cases() -> list[str]:
    """Registered names, plus the reference's ``name@variant`` keys of registered names."""
    names = [name for name in list_backbones() if name not in COUNT_ONLY]
    variants = sorted(k for k in REFERENCE_COUNTS if "@" in k and k.split("@")[0] in names)
    return names + variants


def _param(case: str):
    marks = [pytest.mark.slow] if case.split("@")[0] in SLOW else []
    return pytest.param(case, marks=marks, id=case)


CASES = [_param(c) for c in _cases()]


class Built:
    """One backbone built for the battery, with its inputs and inference outputs."""

    def __init__(self, case: str):
        self.case = case
        self.name = case.split("@")[0]
        self.kwargs = REFERENCE_COUNTS.get(case, {}).get("kwargs", {})
        self.input_shape = default_input_shape(self.name)
        self.model = get_backbone(self.name, **self.kwargs)
        rng = np.random.default_rng(0)
        self.images = rng.standard_normal((2, *self.input_shape)).astype("float32")
        self.outputs = keras.ops.convert_to_numpy(self.model(self.images, training=False))


@pytest.fixture(scope="module", params=CASES)
def built(request) -> Built:
    """The backbone under test, built once for all of its tests (pytest groups them)."""
    b = Built(request.param)
    yield b
    del b.model
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def strategy() -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy over 2 logical CPUs for all backbones (several strategies in one
    process reuse collective instance keys and then clash)."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "tests/models/conftest.py could not split the CPU (TF initialised too early)"
    return tf.distribute.MirroredStrategy(devices[:2])


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def _count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def test_reference_copy_is_current():
    if not os.path.exists(SHARED_REFERENCE):
        pytest.skip(f"{SHARED_REFERENCE} not found")
    shared = _load_reference(SHARED_REFERENCE)
    # entries counted in this repository (e.g. from a released weights file) may come on top
    assert {k: REFERENCE_COUNTS.get(k) for k in shared} == shared, f"copy {SHARED_REFERENCE} to {REFERENCE}"


def test_every_registered_backbone_has_reference_counts():
    missing = [name for name in list_backbones() if name not in REFERENCE_COUNTS]
    assert not missing, f"add reference parameter counts for {missing} to {REFERENCE}"


def test_forward_shape(built):
    assert built.model.input_shape == (None, *built.input_shape)
    assert built.outputs.shape == (2, EMBEDDING_SIZE)
    assert built.outputs.dtype == np.float32
    assert np.isfinite(built.outputs).all()
    # raw embeddings, not L2-normalised, and the two images differ
    assert not np.allclose(np.linalg.norm(built.outputs, axis=1), 1.0)
    assert not np.allclose(built.outputs[0], built.outputs[1])


def _assert_counts(case: str, model: keras.Model, input_shape) -> None:
    ref = REFERENCE_COUNTS[case]
    assert list(ref["input"]) == list(input_shape)
    assert ref["embedding"] == EMBEDDING_SIZE
    counts = {
        "total": model.count_params(),
        "trainable": _count(model.trainable_weights),
        "non_trainable": _count(model.non_trainable_weights),
    }
    assert counts == {k: ref[k] for k in counts}, ref.get("reference")


def test_parameter_counts_match_reference(built):
    _assert_counts(built.case, built.model, built.input_shape)


@pytest.mark.parametrize("name", sorted(COUNT_ONLY))
def test_parameter_counts_of_count_only_backbones(name):
    _assert_counts(name, get_backbone(name), default_input_shape(name))
    keras.backend.clear_session()


def test_config_round_trip(built):
    config = built.model.get_config()
    json.dumps(config)  # plain JSON types only
    for key, value in built.kwargs.items():
        assert config[key] == value
    clone = type(built.model).from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == built.model.count_params()
    assert [w.shape for w in clone.weights] == [w.shape for w in built.model.weights]
    del clone


def test_keras_file_round_trip(built, tmp_path):
    path = tmp_path / f"{built.name}.keras"
    try:
        built.model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(built.model)
        assert loaded.get_config() == built.model.get_config()
        reloaded = keras.ops.convert_to_numpy(loaded(built.images, training=False))
        np.testing.assert_allclose(reloaded, built.outputs, rtol=1e-6, atol=1e-6)
        del loaded
    finally:
        path.unlink(missing_ok=True)


def test_saved_model_round_trip(built, tmp_path):
    path = str(tmp_path / "saved_model")
    try:
        built.model.export(path, format="tf_saved_model", verbose=False)
        served = tf.saved_model.load(path)
        reloaded = served.serve(tf.constant(built.images)).numpy()
        # graph-mode kernel fusion (grappler) reorders float32 sums: compare at the output's scale
        scale = np.abs(built.outputs).max()
        np.testing.assert_allclose(reloaded, built.outputs, rtol=1e-4, atol=1e-5 * scale)
        del served
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_mixed_precision(built, mixed_precision):
    model = get_backbone(built.name, **built.kwargs)
    outputs = model(built.images, training=False)
    assert outputs.dtype == "float32"
    assert np.isfinite(keras.ops.convert_to_numpy(outputs)).all()
    assert model.layers[-1].dtype_policy.name == "float32"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "float16" for layer in convs)
    # variables stay float32; BatchNormalization computes its statistics in float32 too
    assert all(v.dtype == "float32" for v in model.weights)
    del model


def test_train_step_under_mirrored_strategy(built, strategy):
    with strategy.scope():
        model = get_backbone(built.name, **built.kwargs)
        # eager steps: tracing a 2-replica train step of a 100-layer net takes ~1 min on 2 cores,
        # ten times the step itself; variables, all-reduce and BN updates are the same
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", run_eagerly=True)
    first, last = model.trainable_weights[0], model.trainable_weights[-1]
    before = [v.numpy() for v in (first, last)]
    images = np.concatenate([built.images, built.images[::-1] * 0.5])  # 2 per replica
    targets = np.random.default_rng(1).standard_normal((4, EMBEDDING_SIZE)).astype("float32")
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    assert strategy.num_replicas_in_sync == 2
    assert np.isfinite(history.history["loss"][0])
    for old, new in zip(before, (first, last)):
        assert np.any(old != new.numpy()), f"{new.path} was not updated"
    del model

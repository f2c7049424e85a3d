import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.core.errors import UserError
from tfface.training import OPTIMIZERS, learning_rate_for_epoch, make_optimizer, read_schedule_file
from tfface.training.optimizers import MomentumSGD


def test_facenet_schedule_file(tmp_path):
    path = tmp_path / "lr.txt"
    path.write_text("# comment\n0:  0.05\n\n100: 0.005  # drop\n60: 0.01\n150: -\n")
    schedule = read_schedule_file(str(path))
    assert schedule == [(0, 0.05), (60, 0.01), (100, 0.005), (150, None)]
    assert [learning_rate_for_epoch(schedule, e) for e in (0, 59, 60, 99, 100, 149)] == [0.05, 0.05, 0.01, 0.01, 0.005, 0.005]
    assert learning_rate_for_epoch(schedule, 150) is None  # '-' stops training


def test_bad_schedule_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_schedule_file(str(tmp_path / "missing.txt"))
    path = tmp_path / "bad.txt"
    path.write_text("0: 0.1\nten: 0.01\n")
    with pytest.raises(UserError, match="line 2 .* expected '<epoch>: <rate>'"):
        read_schedule_file(str(path))
    path.write_text("# only a comment\n")
    with pytest.raises(UserError, match="no '<epoch>: <rate>' lines"):
        read_schedule_file(str(path))


@pytest.mark.parametrize(
    "name, cls, attrs",
    [
        ("ADAGRAD", keras.optimizers.Adagrad, {}),
        ("ADADELTA", keras.optimizers.Adadelta, {"rho": 0.9, "epsilon": 1e-6}),
        ("ADAM", keras.optimizers.Adam, {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 0.1}),
        ("RMSPROP", keras.optimizers.RMSprop, {"rho": 0.9, "momentum": 0.9, "epsilon": 1.0}),
        ("MOM", MomentumSGD, {"momentum": 0.9, "nesterov": True}),
        ("SGD", keras.optimizers.SGD, {"momentum": 0.0}),
    ],
)
def test_optimizers_use_facenet_constants(name, cls, attrs):
    optimizer = make_optimizer(name, 0.25)
    assert type(optimizer) is cls and float(optimizer.learning_rate) == 0.25
    for key, value in attrs.items():
        assert getattr(optimizer, key) == pytest.approx(value)
    assert set(OPTIMIZERS) >= {name}


def test_unknown_optimizer():
    with pytest.raises(UserError, match="optimizer: expected one of"):
        make_optimizer("LION", 0.1)


@pytest.mark.parametrize("nesterov", [True, False])
def test_fused_momentum_matches_keras_sgd_and_numpy(nesterov):
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(3)]
    results = []
    for cls in (MomentumSGD, keras.optimizers.SGD):
        weights = [tf.Variable(w) for w in start]
        optimizer = cls(0.1, momentum=0.9, nesterov=nesterov)
        step = tf.function(lambda g: optimizer.apply_gradients(zip(g, weights)))
        for g in grads:
            step([tf.constant(x) for x in g])
        results.append([w.numpy() for w in weights])
    expected = [w.astype(np.float64) for w in start]
    momenta = [np.zeros_like(w) for w in expected]
    for g in grads:
        for i, gi in enumerate(g):
            momenta[i] = 0.9 * momenta[i] - 0.1 * gi
            expected[i] += 0.9 * momenta[i] - 0.1 * gi if nesterov else momenta[i]
    for ours, theirs, reference in zip(*results, expected):
        np.testing.assert_array_equal(ours, theirs)  # the same arithmetic, fused
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["SGD", "MOM", "ADAM"])
def test_moving_average_of_the_weights_matches_numpy(name):
    rng = np.random.default_rng(1)
    start = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(4)]
    weights, plain = [tf.Variable(w) for w in start], [tf.Variable(w) for w in start]
    optimizer, reference = make_optimizer(name, 0.1, moving_average_decay=0.8), make_optimizer(name, 0.1)
    step = tf.function(lambda g: optimizer.apply_gradients(zip(g, weights)))
    reference_step = tf.function(lambda g: reference.apply_gradients(zip(g, plain)))
    averages = None
    for g in grads:
        step([tf.constant(x) for x in g])
        reference_step([tf.constant(x) for x in g])
        current = [w.numpy().astype(np.float64) for w in plain]  # the averaging leaves the updates alone
        averages = current if averages is None else [0.8 * a + 0.2 * w for a, w in zip(averages, current)]
    for ours, theirs in zip(weights, plain):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    optimizer.finalize_variable_values(weights)
    for ours, expected in zip(weights, averages):
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_moving_average_decay_range():
    assert not make_optimizer("ADAM", 0.1).use_ema
    for decay in (-0.1, 1.0):
        with pytest.raises(UserError, match=r"--moving_average_decay: expected a value in \[0, 1\)"):
            make_optimizer("ADAM", 0.1, moving_average_decay=decay)

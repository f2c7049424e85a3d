"""The Trainer in-process: seeded initialisation, learning, the NaN guard, skipped fp16 steps,
dropout plumbing and the precision/TPU choices."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training import helpers
from tfface.data.synthetic import write_train_split
from tfface.core.errors import UserError
from tfface.models import get_backbone, has_dropout, list_backbones
from tfface.training import TrainConfig, Trainer
from tfface.training.strategy import tpu_resolver
from tfface.recognition.inference import load_embedder
from tfface.training import trainer as trainer_module
from tfface.training.trainer import NonFiniteLossError, cpu_has_bfloat16, precision_policy


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "train"
    write_train_split(str(path), range(6), 8, seed=2, num_shards=2)
    return str(path)


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _config(data, run_dir, **kwargs):
    defaults = dict(
        model_def="mobilefacenet", image_size=(32, 32), embedding_size=16, batch_size=12, epoch_size=4,
        max_nrof_epochs=1, log_every_n_steps=2, head_kwargs={"scale": 16.0, "margin": 0.2}, optimizer="MOM",
    )
    return TrainConfig(data_dir=data, run_dir=str(run_dir), **{**defaults, **kwargs})


def _weights(trainer):
    return [v.numpy() for v in trainer.embedder.weights + trainer.head.weights]


def test_seed_fixes_the_initial_weights(data, tmp_path):
    first = _weights(Trainer(_config(data, tmp_path / "a", seed=5)))
    again = _weights(Trainer(_config(data, tmp_path / "b", seed=5)))
    other = _weights(Trainer(_config(data, tmp_path / "c", seed=6)))
    assert len(first) == len(again) > 100
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


@pytest.mark.slow
def test_trainer_learns_the_synthetic_identities(data, tmp_path):
    result = Trainer(_config(data, tmp_path, epoch_size=10, max_nrof_epochs=4, learning_rate=0.05, log_every_n_steps=10)).train()
    # 6 identities: chance is 1/6; the last 10 steps' training accuracy (margin-free) must be far above.
    print(f"Trainer on 6 synthetic identities: accuracy {result.final_accuracy:.3f}, loss {result.final_loss:.3f}")
    assert result.final_accuracy >= 0.6 and result.steps == 40 and result.epochs_run == 4
    assert os.path.isfile(os.path.join(result.export_dir, "saved_model.pb"))


def test_non_finite_loss_stops_with_step_and_last_good_checkpoint(data, tmp_path):
    schedule = tmp_path / "lr.txt"
    schedule.write_text("0: 0.01\n1: 1e30\n")  # epoch 2 explodes
    trainer = Trainer(_config(data, tmp_path / "run", max_nrof_epochs=3, learning_rate_schedule_file=str(schedule),
                              log_every_n_steps=1, checkpoint_every_n_steps=1))
    with pytest.raises(NonFiniteLossError, match=r"non-finite (loss at step \d+ \(epoch 2|weights after step \d+).* last good checkpoint is .*ckpt-\d+") as err:
        trainer.train()
    assert isinstance(err.value, UserError)  # the CLIs print it as one line
    checkpoints = str(tmp_path / "run" / "checkpoints")
    assert tf.train.latest_checkpoint(checkpoints) in str(err.value)
    saved = helpers.checkpoint_arrays(checkpoints)
    assert all(np.all(np.isfinite(v)) for v in saved.values() if np.issubdtype(v.dtype, np.floating))
    assert helpers.state_value(saved, "step") >= 4  # epoch 1 was saved; nothing after the explosion
    assert not os.path.exists(tmp_path / "run" / "export")


def test_mixed_precision_counts_skipped_steps(data, tmp_path):
    trainer = Trainer(_config(data, tmp_path, mixed_precision=True, mixed_precision_dtype="float16", epoch_size=6,
                              log_every_n_steps=3))
    assert trainer.policy == "mixed_float16" and trainer.loss_scaling
    trainer.optimizer.dynamic_scale.assign(2.0**120)  # every float16 gradient overflows until the scale drops
    before = [v.numpy() for v in trainer.embedder.trainable_weights]
    result = trainer.train()
    assert result.steps == 6 and result.skipped_steps == 6  # skipped, counted, not a failure
    after = [v.numpy() for v in trainer.embedder.trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # no update was applied
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** (120 - 6)
    saved = helpers.checkpoint_arrays(str(tmp_path / "checkpoints"))
    assert helpers.state_value(saved, "skipped_steps") == 6


def test_backbones_without_dropout_reject_keep_probability_below_one():
    assert {n for n in list_backbones() if has_dropout(n)} == {
        "inception_resnet_v1", "ir_50", "ir_100", "ir_se_50", "ir_se_100", *(f"iresnet{d}" for d in (18, 34, 50, 100, 200))}
    for name in (n for n in list_backbones() if not has_dropout(n)):
        with pytest.raises(ValueError, match=f"backbone '{name}' has no dropout: keep_probability must be 1.0, got 0.8"):
            get_backbone(name, keep_probability=0.8)
    net = get_backbone("mobilefacenet", input_shape=(32, 32, 3), embedding_size=8, keep_probability=1.0)
    assert not [layer for layer in net.layers if isinstance(layer, keras.layers.Dropout)]


@pytest.mark.parametrize("name, shape", [("ir_50", (32, 32, 3)), ("inception_resnet_v1", (80, 80, 3))])
def test_keep_probability_is_the_keep_rate_of_every_dropout_family(name, shape):
    """One class per family (the IR variants share theirs); 1.0 turns dropout off."""
    images = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    for keep in (1.0, 0.3):
        net = get_backbone(name, input_shape=shape, embedding_size=8, keep_probability=keep)
        assert net.get_layer("dropout").rate == pytest.approx(1.0 - keep)
        first, second = (net(images, training=True).numpy() for _ in range(2))
        assert np.array_equal(first, second) == (keep == 1.0)  # random masks only with dropout on


def test_bfloat16_run_trains_and_exports_float32(data, tmp_path):
    trainer = Trainer(_config(data, tmp_path, mixed_precision=True, mixed_precision_dtype="bfloat16", epoch_size=6,
                              log_every_n_steps=3, learning_rate=0.05))
    assert trainer.policy == "mixed_bfloat16" and not trainer.loss_scaling  # no loss scaling in bfloat16
    assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    conv = trainer.embedder.get_layer("mobilefacenet").get_layer("conv1_conv")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    before = _weights(trainer)
    result = trainer.train()
    after = _weights(trainer)
    assert result.steps == 6 and result.skipped_steps == 0 and np.isfinite(result.final_loss)
    assert all(w.dtype == np.float32 and np.all(np.isfinite(w)) for w in after)
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert sum(changed) > 0.9 * len(changed)  # (nearly) every variable was updated
    saved = helpers.checkpoint_arrays(str(tmp_path / "checkpoints"))
    assert all(v.dtype == np.float32 for k, v in saved.items() if np.issubdtype(v.dtype, np.floating))
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert trainer.embedder(images.astype("float32")).dtype == "float32"
    # The export computes in float32: the same embeddings as the weights under a float32 policy.
    exported = load_embedder(result.export_dir).embed(images)
    assert exported.dtype == np.float32
    keras.mixed_precision.set_global_policy("float32")
    reference = Trainer(_config(data, tmp_path / "reference"))
    reference.embedder.set_weights(trainer.embedder.get_weights())
    expected = tf.math.l2_normalize(reference.embedder(images.astype("float32")), 1).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-5)


def test_moving_average_weights_are_evaluated_and_exported(data, tmp_path):
    decay, epochs, steps = 0.6, 2, 3
    config = dict(epoch_size=steps, max_nrof_epochs=epochs, learning_rate=0.05, deterministic=True)
    # The trajectory of the weights, step by step, from a run without averaging.
    plain = Trainer(_config(data, tmp_path / "plain", **config))
    train_steps, trajectory = plain._make_step(), []
    for epoch in range(epochs):
        iterator = iter(plain._dataset(epoch, 0))
        for _ in range(steps):
            train_steps(iterator, tf.constant(1))
            trajectory.append([v.numpy().astype(np.float64) for v in plain.embedder.trainable_weights])
    averages = [trajectory[0]]
    for weights in trajectory[1:]:
        averages.append([decay * a + (1 - decay) * w for a, w in zip(averages[-1], weights)])

    evaluated = []
    record = lambda embedder, epoch: evaluated.append([v.numpy() for v in embedder.trainable_weights]) or {}  # noqa: E731
    trainer = Trainer(_config(data, tmp_path / "averaged", moving_average_decay=decay, evaluate=record, **config))
    result = trainer.train()
    for seen, expected in zip(evaluated, (averages[steps - 1], averages[-1])):  # after each epoch: the averages
        for ours, reference in zip(seen, expected):
            np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    for ours, reference in zip(trainer.embedder.trainable_weights, trajectory[-1]):  # trains on the weights
        np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-4, atol=1e-6)
    assert max(np.abs(a - w).max() for a, w in zip(averages[-1], trajectory[-1])) > 1e-3

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    for variable, value in zip(plain.embedder.trainable_weights, averages[-1]):
        variable.assign(value)
    expected = tf.math.l2_normalize(plain.embedder(images.astype("float32")), 1).numpy()
    np.testing.assert_allclose(load_embedder(result.export_dir).embed(images), expected, atol=1e-5)


def test_precision_policy_and_tpu_resolver(monkeypatch, tmp_path):
    default = tf.distribute.get_strategy()
    assert precision_policy(False, default) == "float32"
    assert precision_policy(True, default, "float16") == "mixed_float16"
    assert precision_policy(True, default, "bfloat16") == "mixed_bfloat16"
    with pytest.raises(UserError, match="mixed_precision_dtype: expected one of"):
        precision_policy(True, default, "int8")
    for flags, policy in (("fpu avx512f avx512_bf16 sse", "mixed_bfloat16"), ("fpu amx_bf16", "mixed_bfloat16"),
                          ("fpu avx512f", "mixed_float16")):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_bfloat16(str(tmp_path / "cpuinfo")) == (policy == "mixed_bfloat16")
        monkeypatch.setattr(trainer_module, "cpu_has_bfloat16", lambda: policy == "mixed_bfloat16")
        assert precision_policy(True, default) == policy  # no GPU here
    assert not cpu_has_bfloat16(str(tmp_path / "missing"))
    tpu_strategy = object.__new__(tf.distribute.TPUStrategy)  # no TPU here: only its type matters
    assert precision_policy(True, tpu_strategy) == "mixed_bfloat16"
    assert tpu_resolver("grpc://10.0.0.2:8470").master() == "grpc://10.0.0.2:8470"
    with pytest.raises(UserError, match="--tpu: no TPU found"):
        tpu_resolver("")

"""Partial FC: sharded centres on 2 and 4 logical CPUs against the plain head and NumPy.

The multi-replica cases run in ``partial_fc_worker.py`` subprocesses (logical CPUs are fixed at
TensorFlow start-up); the assertions on their arrays are here.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.heads import reference as ref
from tests.heads.conftest import record
from tfface import heads
from tfface.core.errors import UserError
from tfface.heads.partial_fc import check_partial_fc, num_sampled, shard_ranges

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT}
MARGINS = {"cosface": (ref.cosface, {"s": 16.0, "m": 0.35}), "arcface": (ref.arcface, {"s": 16.0, "m": 0.5})}
ADAPTIVE = ["adaface", "curricularface", "magface", "subcenter_arcface"]  # issue 29; NumPy-checked in test_adaptive_heads


def _worker(replicas: int, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp(f"partial_fc_{replicas}") / "out.npz"
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "partial_fc_worker.py"), str(replicas), str(out)],
        capture_output=True, text=True, env=ENV, timeout=1800,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]
    with np.load(out) as data:
        return dict(data)


@pytest.fixture(scope="module")
def on2(tmp_path_factory) -> dict:
    return _worker(2, tmp_path_factory)


@pytest.fixture(scope="module")
def on4(tmp_path_factory) -> dict:
    return _worker(4, tmp_path_factory)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return log_z - logits[np.arange(len(labels)), labels]


@pytest.mark.parametrize("num_classes, shards", [(11, 2), (11, 4), (12, 4), (4, 4), (1_000_003, 8)])
def test_shards_cover_every_class_exactly_once(num_classes, shards):
    ranges = shard_ranges(num_classes, shards)
    classes = np.concatenate([np.arange(start, start + size) for start, size in ranges])
    np.testing.assert_array_equal(classes, np.arange(num_classes))
    sizes = [size for _, size in ranges]
    assert len(ranges) == shards and max(sizes) - min(sizes) <= 1


def test_num_sampled_rate_batch_floor_and_shard_cap():
    assert int(num_sampled(101, 0.1, 8)) == 11
    assert int(num_sampled(100, 0.1, 16)) == 16  # room for every positive of the global batch
    assert int(num_sampled(10, 0.1, 64)) == 10
    assert int(num_sampled(10, 1.0, 1)) == 10


@pytest.mark.parametrize("name", sorted(MARGINS))
def test_one_replica_is_the_plain_head(name):
    """No strategy: one shard, and at rate 1 the loss and gradients of the plain head and NumPy."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(6, 8)), tf.float32)
    y = tf.constant([0, 4, 4, 2, 1, 3])
    kwargs = {"scale": 16.0, "margin": MARGINS[name][1]["m"]}
    plain = heads.get_head(name, 5, **kwargs)
    plain.build([(None, 8), (None,)])
    sharded = heads.PartialFC(heads.get_head(name, 5, **kwargs))
    sharded.build([(None, 8), (None,)])
    assert sharded.num_shards == 1 and sharded.ranges == [(0, 5)]
    sharded.set_centres(plain.kernel.numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        want = heads.head_loss(y, plain([x, y]))
        got = sharded([x, y])
    np.testing.assert_allclose(got, want, atol=1e-5)
    fn, kw = MARGINS[name]
    numpy_loss = _cross_entropy(fn(x.numpy().astype(np.float64), plain.kernel.numpy().astype(np.float64), y.numpy(), **kw), y.numpy())
    np.testing.assert_allclose(got, numpy_loss, atol=1e-4)
    for a, b in zip(tape.gradient(got, [x, sharded.shard(0)]), tape.gradient(want, [x, plain.kernel])):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_config_round_trip_keeps_the_wrapped_head():
    layer = heads.PartialFC(heads.ArcFace(7, scale=32.0, margin=0.4), sample_rate=0.25, seed=3)
    copy = heads.PartialFC.from_config(layer.get_config())
    assert isinstance(copy.head, heads.ArcFace) and copy.head.get_config() == layer.head.get_config()
    assert (copy.sample_rate, copy.seed, copy.num_classes) == (0.25, 3, 7)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="normalised margin head"):
        heads.PartialFC(heads.Softmax(10))
    with pytest.raises(ValueError, match="sample_rate"):
        heads.PartialFC(heads.CosFace(10), sample_rate=0.0)
    with pytest.raises(UserError, match="--head"):
        check_partial_fc("sphereface", 0.1, "mirrored", False)
    with pytest.raises(UserError, match="--sample_rate"):
        check_partial_fc("arcface", 1.5, "mirrored", False)
    with pytest.raises(UserError, match="--strategy"):
        check_partial_fc("arcface", 0.1, "tpu", False)
    with pytest.raises(UserError, match="--mixed_precision"):
        check_partial_fc("arcface", 0.1, "default", True)
    check_partial_fc("combined", 0.1, "mirrored", False)


def _check_equality(data: dict, name: str, replicas: int) -> None:
    key = f"{name}_{replicas}"
    assert data[f"{key}_devices_ok"].all() and len(data[f"{key}_devices_ok"]) == replicas
    assert data[f"{key}_no_weights"].all()  # no mirrored copy: neither own weights nor a built inner head
    np.testing.assert_array_equal(data[f"{key}_centres"], data[f"{key}_kernel"])
    pairs = [("loss", "loss"), ("gx", "gx"), ("gkernel", "gkernel")]
    pairs += [(f"gmodel{i}", f"gmodel{i}") for i in range(2)]
    for got, want in pairs:
        error = np.max(np.abs(data[f"{key}_{got}"] - data[f"{key}_ref_{want}"]))
        record(f"partial_fc/{key}/{got}", error)
        scale = max(1.0, np.max(np.abs(data[f"{key}_ref_{want}"])))
        assert error <= 2e-6 * scale, (got, error)
    state, ref_state = data[f"{key}_state"], data[f"{key}_ref_state"]  # moving statistics after 2 steps
    assert state.shape == ref_state.shape == ((2,) if name == "adaface" else (1,) if name == "curricularface" else (0,))
    if state.size:
        record(f"partial_fc/{key}/state", np.max(np.abs(state - ref_state) / np.abs(ref_state)))
        np.testing.assert_allclose(state, ref_state, rtol=1e-5)
    np.testing.assert_array_equal(data[f"{key}_predictions"], data[f"{key}_ref_predictions"])
    if name not in MARGINS:
        return
    fn, kw = MARGINS[name]
    e, w, y = (data[f"{key}_{k}"].astype(np.float64) for k in ("embeddings", "kernel", "y"))
    y = y.astype(int)
    np.testing.assert_allclose(data[f"{key}_loss"], _cross_entropy(fn(e, w, y, **kw), y), atol=2e-5)


@pytest.mark.parametrize("name", sorted(MARGINS) + ADAPTIVE)
def test_two_replicas_equal_the_plain_head(on2, name):
    _check_equality(on2, name, 2)


@pytest.mark.parametrize("name", sorted(MARGINS) + ADAPTIVE)
def test_four_replicas_equal_the_plain_head(on4, name):
    _check_equality(on4, name, 4)


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("name", ["adaface", "curricularface"])
def test_mirrored_statistics_are_those_of_the_global_batch(on2, on4, name, replicas):
    """Without Partial FC: each replica's head on its rows, 2 steps; loss and statistics = one device's."""
    data, key = {2: on2, 4: on4}[replicas], f"mirrored_{name}_{replicas}"
    for i in range(2):
        want = data[f"{key}_ref_loss{i}"]
        error = np.max(np.abs(data[f"{key}_loss{i}"] - want)) / max(1.0, np.max(np.abs(want)))
        record(f"partial_fc/{key}/loss", error)
        assert error <= 1e-5
    state, want = data[f"{key}_state"], data[f"{key}_ref_state"]
    record(f"partial_fc/{key}/state", np.max(np.abs(state - want) / np.abs(want)))
    np.testing.assert_allclose(state, want, rtol=1e-5)


def test_sampling_keeps_every_positive_and_draws_new_negatives(on4):
    ranges = on4["sample_ranges"]
    for r, (start, size) in enumerate(ranges):
        samples = []
        for t in range(3):
            index, labels, remapped = (on4[f"sample{t}_{k}{r}"] for k in ("index", "labels", "remapped"))
            assert len(np.unique(index)) == len(index) == int(num_sampled(size, 0.1, 8))
            assert set(labels[labels >= 0]) <= set(index)  # positives are never dropped
            np.testing.assert_array_equal(index[remapped[labels >= 0]], labels[labels >= 0])
            assert np.all(remapped[labels < 0] == -1)
            samples.append(set(index) - set(labels))
        assert samples[0] != samples[1] != samples[2]  # negatives are redrawn every step


def test_sampled_loss_is_the_softmax_over_the_sampled_centres(on4):
    """rho = 0.1: the distributed cross-entropy equals NumPy's over the union of the sampled columns."""
    ranges, centres = on4["sample_ranges"], on4["sample_centres"].astype(np.float64)
    for t in range(3):
        x, y = on4[f"sample{t}_x"].astype(np.float64), on4[f"sample{t}_y"].astype(int)
        columns = np.concatenate([start + on4[f"sample{t}_index{r}"] for r, (start, _) in enumerate(ranges)])
        logits = ref.cosface(x, centres, y, s=16.0, m=0.35)[:, columns]
        local = np.array([np.flatnonzero(columns == label)[0] for label in y])
        error = np.max(np.abs(on4[f"sample{t}_loss"] - _cross_entropy(logits, local)))
        record("partial_fc/sampled_loss", error)
        assert error < 2e-5


def test_learns_at_sample_rate_0_1(on2):
    """200 classes, 10 of each replica's 100 centres per step: held-out accuracy far above 1/200."""
    assert int(on2["learn_sampled"][0]) == 10
    before, after = on2["learn_accuracy"]
    assert before < 0.05 and after > 0.6, (before, after)
    first, last = on2["learn_loss"]
    assert last < 0.5 * first


def test_checkpoint_restores_each_shard_and_resume_is_exact(on2):
    keys = set(on2["resume_keys"])
    for r in range(2):
        assert f"head/shard_{r}/.ATTRIBUTES/VARIABLE_VALUE" in keys
        assert f"head/sampler_{r}/_state_var/.ATTRIBUTES/VARIABLE_VALUE" in keys
        assert any(k.startswith(f"head/optimizer_{r}/") for k in keys)
    np.testing.assert_array_equal(on2["resume_restored_centres"], on2["resume_saved_centres"])
    count = len([k for k in on2 if k.startswith("resume_a")])
    assert count == 1 + 2 + 2  # centres, dense kernel + bias, both shards' first moments
    for i in range(count):
        np.testing.assert_array_equal(on2[f"resume_a{i}"], on2[f"resume_b{i}"])


@pytest.mark.slow
def test_train_softmax_partial_fc_on_two_replicas(tmp_path):
    from tfface.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(str(tmp_path / "synthetic"), 12, 4, 20, 2, num_shards=2, seed=3)
    proc = subprocess.run(
        [sys.executable, "-m", "tfface.train_softmax", f"--data_dir={data['train_dir']}",
         f"--models_base_dir={tmp_path / 'runs'}", "--subdir=pfc", "--image_size=32", "--embedding_size=16",
         "--batch_size=8", "--epoch_size=2", "--max_nrof_epochs=1", "--log_every_n_steps=1", "--head=cosface",
         "--head_kwargs=scale=16,margin=0.2", "--partial_fc", "--sample_rate=0.5", "--strategy=mirrored",
         "--cpu_devices=2"],
        capture_output=True, text=True, env=ENV, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "pfc"
    assert os.path.isfile(run_dir / "export" / "mobilefacenet" / "1" / "saved_model.pb")
    shapes = dict(tf.train.list_variables(str(run_dir / "checkpoints" / "ckpt-1")))
    assert shapes["head/shard_0/.ATTRIBUTES/VARIABLE_VALUE"] == [16, 6]
    assert shapes["head/shard_1/.ATTRIBUTES/VARIABLE_VALUE"] == [16, 6]
    assert not any(k.startswith("head/kernel") or k.startswith("head/head/") for k in shapes)
    assert "--partial_fc" in (run_dir / "flags.txt").read_text()
    assert not math.isnan(float(proc.stdout.split("Final training loss ")[1].split(",")[0]))


def test_train_softmax_rejects_partial_fc_with_a_plain_softmax(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tfface.train_softmax", f"--data_dir={tmp_path}", "--head=softmax", "--partial_fc"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--head" in proc.stderr and "--partial_fc" in proc.stderr

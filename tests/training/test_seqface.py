"""SeqFace training (tfface/training/seqface.py): real Trainer steps on tiny labelled + sequence data."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.data.test_sequences import write_sequence_folders
from tests.losses import reference as ref
from tests.training import helpers
from tfface import losses
from tfface.data import folders, sequences
from tfface.data.pipeline import Augment
from tfface.data.synthetic import write_train_split
from tfface.core.errors import UserError
from tfface.training import TrainConfig
from tfface.training.seqface import SeqFaceOptions, SeqFaceTrainer, check_options

CLASSES = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqface")
    write_train_split(str(root / "labelled"), range(CLASSES), 6, seed=2, num_shards=2)
    dataset = folders.get_dataset(write_sequence_folders(str(root / "folders")))
    folders.dataset_to_tfrecords(dataset, str(root / "sequences"), num_shards=2, sequences=True)
    return str(root / "labelled"), str(root / "sequences")


def make_trainer(data, run_dir, options: dict | None = None, **config) -> SeqFaceTrainer:
    """SphereFace-20 + ArcFace at 32 px; batch 8 = 4 labelled images + 2 sequences x 2 frames."""
    labelled, sequence_dir = data
    defaults = dict(
        model_def="sphereface20", image_size=(32, 32), embedding_size=16, batch_size=8, epoch_size=4,
        max_nrof_epochs=1, log_every_n_steps=2, head_kwargs={"scale": 16.0, "margin": 0.2}, optimizer="MOM",
        learning_rate=0.01,
    )
    seqface = dict(sequence_ratio=0.5, frames_per_sequence=2, dsa_loss_weight=0.04, dsa_agent_rate=0.5,
                   dsa_dropout_ratio=0.0, dsa_center_iter=1, dsa_diff_iter=2)
    return SeqFaceTrainer(
        TrainConfig(data_dir=labelled, run_dir=str(run_dir), **{**defaults, **config}),
        SeqFaceOptions(sequence_dir, **{**seqface, **(options or {})}),
    )


def test_steps_match_numpy_warm_up_and_learn(data, tmp_path):
    trainer = make_trainer(data, tmp_path)
    dsa, options = trainer.dsa, trainer.options
    step = trainer._replica_step()  # noqa: SLF001  (the real step, one call per batch)
    run = tf.function(lambda *batch: trainer.strategy.run(step, args=batch))
    batches = iter(trainer._dataset(0, 0))  # noqa: SLF001
    totals, errors = [], {"lsr": 0.0, "dsa": 0.0}
    for k in range(30):
        images, labels, sequence_ids = next(batches)
        y, s = labels.numpy(), sequence_ids.numpy()
        # 4 labelled images, then 2 whole sequences of 2 frames: the requested ratio 0.5
        assert (s[:4] == -1).all() and (y[:4] >= 0).all() and (y[4:] == -1).all()
        pairs = s[4:].reshape(2, 2)
        assert (pairs >= 0).all() and (pairs[:, 0] == pairs[:, 1]).all() and pairs[0, 0] != pairs[1, 0]
        if k < 4:  # the same batch through NumPy: embeddings and agents before the step
            x = trainer.embedder(images, training=True).numpy().astype(np.float64)
            logits = trainer.head([x.astype(np.float32), losses.mask_sequence_labels(labels, sequence_ids)]).numpy()
            agents = dsa.agents.numpy().astype(np.float64)
        metrics = run(images, labels, sequence_ids).numpy()
        totals.append(metrics[0])
        if k >= 4:
            continue
        own = np.where(s >= 0, CLASSES + s, y)
        every = list(range(dsa.num_agents))
        pull = ref.dsa(x, agents, own, CLASSES, 1.0, options.dsa_alpha, options.dsa_beta, every)
        push = ref.dsa(x, agents, own, CLASSES, 0.0, options.dsa_alpha, options.dsa_beta, every)
        on_pull, on_push = k >= options.dsa_center_iter, k >= options.dsa_diff_iter  # the seed's warm-up
        want = options.dsa_loss_weight * (options.dsa_lambda * on_pull * pull + (1 - options.dsa_lambda) * on_push * push)
        assert metrics[4] == pytest.approx(want, rel=1e-4, abs=1e-7)
        assert (metrics[4] == 0.0) == (k == 0) and push > 0
        want_lsr = np.mean(ref.lsr(y, logits.astype(np.float64), s))
        assert metrics[1] == pytest.approx(want_lsr, rel=1e-4)
        errors["lsr"] = max(errors["lsr"], abs(metrics[1] / want_lsr - 1))
        errors["dsa"] = max(errors["dsa"], abs(metrics[4] / want - 1) if want else abs(metrics[4]))
        moved = agents.copy()  # agents move during the warm-up too
        for j in np.unique(own):
            moved[j] -= options.dsa_agent_rate * np.sum(agents[j] - x[own == j], axis=0) / (1 + np.sum(own == j))
        np.testing.assert_allclose(dsa.agents.numpy(), moved, atol=2e-5)
    assert int(dsa.iteration.numpy()) == 30
    first, last = np.mean(totals[2:8]), np.mean(totals[-6:])
    print(f"SeqFace tiny run: loss {first:.3f} (steps 3-8) -> {last:.3f} (steps 25-30); step vs NumPy: "
          f"LSR rel. error {errors['lsr']:.2g}, DSA rel. error {errors['dsa']:.2g}")
    assert last < 0.8 * first


def test_replica_batches_carry_whole_sequences(data, tmp_path):
    trainer = make_trainer(data, tmp_path, batch_size=12, options={"sequence_ratio": 0.34})
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    for images, labels, sequence_ids in trainer.input_fn(0, 0)(context).take(2):
        s = sequence_ids.numpy()  # per replica: 6 = 4 labelled + 1 sequence x 2 frames
        assert images.shape[0] == 6 and (s[:4] == -1).all() and s[4] == s[5] >= 0


def test_resumed_mid_epoch_ends_with_the_same_weights_and_agents(data, tmp_path):
    settings = dict(
        epoch_size=4, max_nrof_epochs=2, checkpoint_every_n_steps=3, deterministic=True, log_every_n_steps=3,
        augment=Augment(random_flip=True), options={"dsa_dropout_ratio": 0.5, "dsa_center_iter": 2, "dsa_diff_iter": 7},
    )
    whole = make_trainer(data, tmp_path / "whole", **settings).train()
    assert whole.steps == 8 and whole.export_dir
    # Restart from the mid-epoch checkpoint of step 6 (epoch 2, batch 2) in another run directory.
    source, target = tmp_path / "whole" / "checkpoints", tmp_path / "cut" / "checkpoints"
    os.makedirs(target)
    for path in glob.glob(str(source / "ckpt-3.*")):
        shutil.copy(path, target)
    (target / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-3"\n')
    at = helpers.checkpoint_arrays(str(target))
    assert helpers.state_value(at, "step") == 6 and helpers.state_value(at, "epoch_step") == 2
    resumed = make_trainer(data, tmp_path / "cut", **settings).train()
    assert resumed.steps == 8
    a, b = helpers.checkpoint_arrays(str(source)), helpers.checkpoint_arrays(str(target))
    assert any(key.startswith("dsa/") for key in a) and helpers.state_value(a, "dsa/iteration") == 8
    difference = helpers.max_weight_difference(a, b)
    print(f"SeqFace resume equality: max |w_whole - w_resumed| = {difference:.3g}")
    assert difference == 0.0
    other = {**settings, "options": {**settings["options"], "frames_per_sequence": 1}}
    with pytest.raises(UserError, match="trained with ratio 0.5, 2 frames per sequence on 20 frames of 5 sequences"):
        make_trainer(data, tmp_path / "cut", **other).train()


def test_bad_options_are_one_line_errors(data, tmp_path):
    base = SeqFaceOptions(data[1])
    for change, match in [
        ({"sequence_ratio": 1.0}, "--sequence_ratio: expected a share of the batch in \\(0, 1\\)"),
        ({"sequence_ratio": 0.0}, "--sequence_ratio"),
        ({"dsa_lambda": 1.5}, "--dsa_lambda"),
        ({"dsa_dropout_ratio": 1.0}, "--dsa_dropout_ratio"),
        ({"dsa_center_iter": -1}, "--dsa_center_iter"),
    ]:
        with pytest.raises(UserError, match=match):
            check_options(SeqFaceOptions(**{**base.__dict__, **change}), False, 0.0)
    with pytest.raises(UserError, match="--partial_fc: SeqFace's LSR loss needs the logits of every identity"):
        check_options(base, True, 0.0)
    with pytest.raises(UserError, match="--center_loss_factor"):
        check_options(base, False, 0.01)
    with pytest.raises(UserError, match="--sequence_data_dir: 36 of 36 examples .* no image/sequence_id"):
        make_trainer((data[0], data[0]), tmp_path)  # labelled data given as sequences
    with pytest.raises(UserError, match="needs 6 distinct sequences, .* has 5"):
        make_trainer(data, tmp_path, batch_size=16, options={"sequence_ratio": 0.75})


def test_cli_converts_sequence_folders_and_names_a_bad_ratio(data, tmp_path):
    """``train_softmax --sequence_data_dir=<sequence folders>``: converted into the run directory
    with sequence ids; a ratio that leaves no whole sequence in the batch is a one-line error."""
    folders_dir = write_sequence_folders(str(tmp_path / "tracks"))
    args = helpers.tiny_args(data[0], tmp_path, "run", f"--sequence_data_dir={folders_dir}", "--model_def=sphereface20",
                             "--sequence_ratio=0.25", "--frames_per_sequence=4")
    proc = helpers.run("tfface.train_softmax", args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "--sequence_ratio=0.25: a (per-replica) batch of 8" in proc.stderr
    converted = sequences.index_sequences(str(tmp_path / "run" / "sequence_tfrecords"))
    assert converted.num_sequences == 5
    assert f"--sequence_data_dir={folders_dir}" in (tmp_path / "run" / "flags.txt").read_text()


@pytest.mark.slow
def test_mirrored_replicas_hold_the_same_model_and_agents(data, tmp_path):
    """2 logical CPUs (a fresh process): each replica moves the agents by its share of the batch,
    the moves are summed (NumPy), replicas stay identical, the warm-up counter counts steps, and
    the loss falls."""
    worker = os.path.join(os.path.dirname(__file__), "seqface_mirrored_worker.py")
    done = subprocess.run([sys.executable, worker, *data, str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    totals = summary["losses"]
    first, last = np.mean(totals[2:8]), np.mean(totals[-6:])
    print(f"SeqFace mirrored x2: agents vs NumPy max |error| {summary['agent_error']:.2g}, replicas differ by at most "
          f"{max(summary['replica_differences']):.2g}, loss {first:.3f} -> {last:.3f}")
    assert summary["replicas"] == 2 and summary["iteration"] == [len(totals)] * 2
    assert max(summary["replica_differences"]) == 0.0
    assert summary["agent_error"] < 5e-5
    assert last < 0.8 * first

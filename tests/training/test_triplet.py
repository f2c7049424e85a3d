"""Triplet training: P x K batches in tf.data, the three minings, and the CLI end to end."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.training import helpers
from tfface.data import samplers, tfrecord
from tfface.data.synthetic import write_train_split
from tfface.core.errors import UserError
from tfface.training import TrainConfig
from tfface.training.triplet import TripletOptions, TripletTrainer, hard_pair_accuracy


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "train"
    write_train_split(str(path), range(6), 5, seed=4, num_shards=2)
    return str(path)


def test_pk_batches_hold_k_images_of_p_people_deterministically(data):
    shards = tfrecord.list_shards(data)
    make = lambda seed, skip=0: samplers.pk_dataset(shards, 3, 4, (16, 16), seed=seed, skip=skip)  # noqa: E731
    batches = [labels.numpy() for _, labels in make(7).take(5)]
    for labels in batches:
        blocks = labels.reshape(3, 4)
        assert (blocks == blocks[:, :1]).all()  # 3 people x 4 images, one person after the other
    assert len({tuple(b) for b in batches}) > 1
    again = [labels.numpy() for _, labels in make(7).take(5)]
    np.testing.assert_array_equal(batches, again)
    resumed = [labels.numpy() for _, labels in make(7, skip=2 * 12).take(3)]
    np.testing.assert_array_equal(batches[2:], resumed)  # skipping whole batches continues the stream
    images, _ = next(iter(make(7)))
    assert images.shape == (12, 16, 16, 3) and images.dtype == tf.float32


def test_hard_pair_accuracy_against_numpy():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 4)).astype("float32")
    labels = np.repeat(np.arange(4), 3).astype("int32")
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    hits = [max(d[i][(labels == labels[i]) & (np.arange(12) != i)]) < min(d[i][labels != labels[i]]) for i in range(12)]
    assert hard_pair_accuracy(tf.constant(labels), tf.constant(emb)).numpy() == pytest.approx(np.mean(hits))


def test_bad_triplet_options_are_user_errors(data, tmp_path):
    config = TrainConfig(data_dir=data, run_dir=str(tmp_path), batch_size=2)
    with pytest.raises(UserError, match="--people_per_batch/--images_per_person: triplets need >= 2 of each, got 3 x 1"):
        TripletTrainer(config, TripletOptions(people_per_batch=3, images_per_person=1, mining="semihard"))
    with pytest.raises(UserError, match="--batch_size: offline triplet mining needs >= 3"):
        TripletTrainer(config, TripletOptions(people_per_batch=3, images_per_person=2))
    with pytest.raises(UserError, match="triplet_mining: expected one of"):
        TripletTrainer(config, TripletOptions(mining="hardest"))


@pytest.mark.slow
@pytest.mark.parametrize("mining", ["semihard", "batch_hard"])  # offline: the CLI test
def test_every_mining_trains(data, tmp_path, mining):
    config = TrainConfig(
        data_dir=data, run_dir=str(tmp_path), image_size=(32, 32), embedding_size=8, batch_size=9, epoch_size=4,
        max_nrof_epochs=1, log_every_n_steps=2, optimizer="ADAM", learning_rate=0.01,
    )
    trainer = TripletTrainer(config, TripletOptions(people_per_batch=3, images_per_person=3, alpha=0.2, mining=mining))
    assert trainer.head is None and trainer.config.batch_size == 9
    before = [v.numpy() for v in trainer.embedder.trainable_weights]
    result = trainer.train()
    assert result.steps == 4 and np.isfinite(result.final_loss) and 0 <= result.final_accuracy <= 1
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, trainer.embedder.trainable_weights))


@pytest.mark.slow
def test_train_tripletloss_cli_resumes_and_exports(data, tmp_path):
    args = [
        f"--data_dir={data}", f"--models_base_dir={tmp_path}", "--subdir=t", "--image_size=32", "--embedding_size=8",
        "--people_per_batch=3", "--images_per_person=3", "--batch_size=9", "--epoch_size=3", "--log_every_n_steps=1",
        "--max_nrof_epochs=1", "--alpha=0.3", "--random_flip",
    ]
    proc = helpers.run("tfface.train_tripletloss", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "t"
    flags = (run_dir / "flags.txt").read_text()
    assert "--people_per_batch=3" in flags and "--triplet_mining=offline" in flags and "--alpha=0.3" in flags
    proc = helpers.run("tfface.train_tripletloss", [f"--flagfile={run_dir / 'flags.txt'}", "--max_nrof_epochs=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = helpers.checkpoint_arrays(str(run_dir / "checkpoints"))
    assert helpers.state_value(saved, "step") == 6 and helpers.state_value(saved, "epoch") == 2
    assert os.path.isfile(run_dir / "export" / "mobilefacenet" / "2" / "saved_model.pb")

"""Sequence data for SeqFace (tfface/data/sequences.py): conversion, the frame index, whole-sequence batches."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.data import folders, sequences, tfrecord
from tfface.data.synthetic import render, sample_identity, write_train_split
from tfface.core.errors import UserError

FRAMES = (3, 5, 2, 4, 6)  # frames of the 5 sequences


def write_sequence_folders(root: str, frames=FRAMES, seed: int = 5) -> str:
    """``root/track_NN/NNN.jpg``: one synthetic face per sequence, ``frames[i]`` renderings of it."""
    for s, count in enumerate(frames):
        identity = sample_identity(np.random.default_rng([seed, s]))
        folder = os.path.join(root, f"track_{s:02d}")
        os.makedirs(folder, exist_ok=True)
        for k in range(count):
            cv2.imwrite(os.path.join(folder, f"{k:03d}.jpg"), render(identity, np.random.default_rng([seed, s, k])))
    return root


@pytest.fixture(scope="module")
def sequence_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequences")
    info = folders.dataset_to_tfrecords(folders.get_dataset(write_sequence_folders(str(root / "folders"))),
                                        str(root / "tfrecords"), num_shards=2, sequences=True)
    assert info["num_sequences"] == 5 and info["num_examples"] == sum(FRAMES)
    return str(root / "tfrecords")


def test_index_reads_every_frame_by_offset(sequence_dir):
    index = sequences.index_sequences(sequence_dir)
    assert index.num_sequences == 5
    assert np.bincount(index.sequence_ids).tolist() == list(FRAMES)
    records = [r.numpy() for r in tf.data.TFRecordDataset(tfrecord.list_shards(sequence_dir))]
    read = sequences.FrameReader(index)(np.arange(len(records)))
    assert list(read) == records  # the same bytes, in file order
    parsed = [tfrecord.parse_example(r) for r in read[:3]]
    assert [int(p["image/sequence_id"]) for p in parsed] == index.sequence_ids[:3].tolist()


def test_labelled_data_is_not_sequence_data(tmp_path):
    write_train_split(str(tmp_path / "labelled"), range(2), 2, seed=0, num_shards=1)
    with pytest.raises(UserError, match=r"--sequence_data_dir: 4 of 4 examples .* no image/sequence_id"):
        sequences.index_sequences(str(tmp_path / "labelled"))
    with pytest.raises(UserError, match="--sequence_data_dir: no \\*.tfrecord shards"):
        sequences.index_sequences(str(tmp_path))


def test_truncated_shard_is_named(sequence_dir, tmp_path):
    shard = tfrecord.list_shards(sequence_dir)[0]
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(open(shard, "rb").read()[:-10])
    with pytest.raises(UserError, match="cut.tfrecord': truncated"):
        sequences.record_offsets(str(cut))


def test_batches_hold_whole_sequences_and_resume_exactly(sequence_dir):
    index = sequences.index_sequences(sequence_dir)
    dataset = sequences.sequence_dataset(index, 2, 3, (24, 24), seed=7)
    batches = [(i.numpy(), s.numpy()) for i, s in dataset.take(4)]
    for images, ids in batches:
        assert images.shape == (6, 24, 24, 3) and images.dtype == np.float32
        groups = ids.reshape(2, 3)
        assert np.all(groups == groups[:, :1]) and groups[0, 0] != groups[1, 0]
    resumed = [(i.numpy(), s.numpy()) for i, s in sequences.sequence_dataset(index, 2, 3, (24, 24), seed=7, skip=2).take(2)]
    for (a_images, a_ids), (b_images, b_ids) in zip(batches[2:], resumed):
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_array_equal(a_images, b_images)


def test_split_batch():
    assert sequences.split_batch(64, 0.5, 4) == (32, 8)  # the seed's 32 + 32
    assert sequences.split_batch(10, 0.3, 2) == (6, 2)  # 3 frames round to 2 whole sequences
    with pytest.raises(UserError, match="--sequence_ratio=0.1: .* 0 sequence"):
        sequences.split_batch(8, 0.1, 4)
    with pytest.raises(UserError, match="0 labelled"):
        sequences.split_batch(8, 0.9, 4)


def test_index_cache_is_reused_while_the_shards_are_unchanged(sequence_dir, tmp_path):
    cache = str(tmp_path / "index.npz")
    built = sequences.index_sequences(sequence_dir, cache=cache)
    stamp = os.stat(cache).st_mtime_ns
    again = sequences.index_sequences(sequence_dir, cache=cache)
    assert os.stat(cache).st_mtime_ns == stamp  # read, not rewritten
    assert [os.path.abspath(p) for p in built.shards] == list(again.shards)
    for name in ("shard", "offset", "length", "sequence_ids"):
        np.testing.assert_array_equal(getattr(built, name), getattr(again, name))
    copy = tmp_path / "copy"  # other shards (another place): indexed anew
    copy.mkdir()
    for path in tfrecord.list_shards(sequence_dir):
        (copy / os.path.basename(path)).write_bytes(open(path, "rb").read())
    moved = sequences.index_sequences(str(copy), cache=cache)
    assert moved.shards[0].startswith(str(copy)) and os.stat(cache).st_mtime_ns != stamp

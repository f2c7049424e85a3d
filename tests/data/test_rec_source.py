"""An InsightFace .rec read directly by the tf.data pipeline and by train_softmax."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.data import pipeline
from tfface.data.recordio import InsightFaceRecord, write_insightface
from tfface.data.rec_source import data_source, read_records
from tfface.data.tfrecord import ShardedWriter, list_shards, make_example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _images(count: int, classes: int, side: int = 24) -> list[tuple[int, bytes]]:
    rng = np.random.default_rng(1)
    return [(i * classes // count, cv2.imencode(".jpg", rng.integers(0, 256, (side, side, 3), np.uint8))[1].tobytes())
            for i in range(count)]


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("rec")
    write_insightface(str(root), _images(20, 4), (24, 24))
    return str(root)


def test_same_batches_as_the_tfrecords_of_the_same_images(rec_dir, tmp_path):
    info, source = data_source(rec_dir)
    assert source == rec_dir and info["num_classes"] == 4 and info["num_examples"] == 20
    assert info["image_size"] == [24, 24] and info["alignment"] == "arcface"
    with ShardedWriter(str(tmp_path), 1, list("abcd"), (24, 24)) as out:
        for label, jpeg in _images(20, 4):
            out.write(make_example(jpeg, label, 24, 24))
    rec = list(pipeline.make_dataset(rec_dir, 8, (20, 20), training=False))
    ref = list(pipeline.make_dataset(list_shards(str(tmp_path)), 8, (20, 20), training=False))
    assert [len(b[1]) for b in rec] == [8, 8, 4]
    for (images, labels), (ref_images, ref_labels) in zip(rec, ref):
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(images, ref_images)


def test_training_order_is_a_seeded_permutation_per_epoch(rec_dir):
    def labels(seed):
        ds = pipeline.make_dataset(rec_dir, 5, (16, 16), training=True, seed=seed,
                                   augment=pipeline.Augment(random_crop=True, random_flip=True))
        return np.concatenate([b[1].numpy() for b in ds.take(8)])  # two epochs of 20

    first = labels(7)
    np.testing.assert_array_equal(first, labels(7))
    for epoch in (first[:20], first[20:]):
        assert sorted(epoch.tolist()) == [i // 5 for i in range(20)]  # every record once
    assert first[:20].tolist() != sorted(first[:20].tolist())


def test_bad_record_fails_with_offset_or_is_skipped(rec_dir, tmp_path):
    for name in ("train.rec", "train.idx", "property"):
        (tmp_path / name).write_bytes(open(os.path.join(rec_dir, name), "rb").read())
    with InsightFaceRecord(str(tmp_path)) as ds:
        offset = ds.reader.index[3]
    data = bytearray((tmp_path / "train.rec").read_bytes())
    data[offset] ^= 0xFF
    (tmp_path / "train.rec").write_bytes(bytes(data))
    with pytest.raises(tf.errors.OpError, match=f"train.rec: byte {offset}: wrong magic"):
        list(read_records(str(tmp_path), training=False, seed=0))
    kept = [int(label) for _, label in read_records(str(tmp_path), training=False, seed=0, skip_bad=True)]
    assert len(kept) == 19


def test_train_softmax_takes_a_rec_dir_as_is(rec_dir, tmp_path):
    # The Trainer reads info + source through data_source (tested above); a full training run over
    # a .rec costs ~70 s on 2 busy cores, so the CLI's side is checked without training (in a
    # subprocess: CLI modules define absl flags that clash when imported together).
    code = ("import sys; from tfface import train_softmax; "
            "print(train_softmax._training_data(sys.argv[1], sys.argv[2]))")
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", code, rec_dir, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == rec_dir and not os.listdir(tmp_path)  # used as is, nothing converted

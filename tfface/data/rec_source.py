"""Reading an InsightFace ``.rec`` dataset directly in tf.data (no conversion, no MXNet).

For trying a dataset before converting it (``prepare_insightface``): ``train_softmax
--data_dir`` accepts such a directory, and :func:`tfface.data.pipeline.make_dataset` takes its
path in place of the shard list. The record offsets come from ``train.idx``; every epoch visits
them in a new random order (a full shuffle, no buffer), records are read in parallel batches
by Python file reads (which release the GIL) and decoded by the pipeline's TF ops.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfface.data import tfrecord
from tfface.data.recordio import InsightFaceRecord, RecordIOError, RecordReader, image_label, unpack

READ_BATCH = 64  # records read per Python call


def is_rec_dir(path: str) -> bool:
    """True when ``path`` holds an InsightFace dataset (``train.rec`` and ``train.idx``)."""
    return os.path.isfile(os.path.join(path, "train.rec")) and os.path.isfile(os.path.join(path, "train.idx"))


def rec_dataset_info(rec_dir: str) -> dict:
    """The ``dataset_info.json`` fields (class count, image size, alignment, example count) of a
    ``.rec`` directory, from its header record and ``property`` file."""
    with InsightFaceRecord(rec_dir) as dataset:
        num_classes = dataset.num_classes
        if num_classes is None:  # no header, no property: the labels say
            num_classes = 1 + max(dataset.image(k).label for k in dataset.image_keys)
        return {
            "schema_version": tfrecord.SCHEMA_VERSION,
            "num_classes": int(num_classes),
            "class_names": [str(i) for i in range(num_classes)],
            "image_size": list(dataset.image_size) if dataset.image_size else None,
            "alignment": "arcface",
            "num_examples": len(dataset.image_keys),
            "source": os.path.abspath(dataset.rec_path),
        }


def data_source(data_dir: str) -> tuple[dict, list[str] | str]:
    """(dataset info, what :func:`tfface.data.pipeline.make_dataset` reads) of a TFRecord
    directory (its shard list) or an InsightFace ``.rec`` directory (its path)."""
    if is_rec_dir(data_dir):
        return rec_dataset_info(data_dir), data_dir
    return tfrecord.read_dataset_info(data_dir), tfrecord.list_shards(data_dir)


class _BatchReader:
    """Reads batches of image records by offset (one memory-mapped reader for all threads)."""

    def __init__(self, rec_path: str, skip_bad: bool):
        self.rec_path, self.skip_bad = rec_path, skip_bad
        self.reader = RecordReader(rec_path)

    def __call__(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reader = self.reader
        encoded, labels = [], []
        for offset in offsets.tolist():
            try:
                data, _ = reader.read_at(offset)
                try:
                    header, payload = unpack(data)
                except ValueError as err:
                    raise RecordIOError(self.rec_path, offset, str(err)) from None
                label = image_label(header)
            except RecordIOError:
                if not self.skip_bad:
                    raise
                payload, label = b"", -1
            encoded.append(payload)
            labels.append(label)
        return np.array(encoded, dtype=object), np.array(labels, np.int64)


def read_records(
    rec_dir: str,
    training: bool,
    seed: int,
    num_pipelines: int = 1,
    pipeline_id: int = 0,
    skip_bad: bool = False,
) -> tf.data.Dataset:
    """``(encoded image bytes, label int64)`` of every image record of ``rec_dir``: in key order,
    or (``training``) repeated forever in a fresh random order each epoch. With ``skip_bad``
    malformed records are dropped (label -1 internally) instead of failing the pipeline."""
    with InsightFaceRecord(rec_dir) as dataset:
        offsets = np.array([dataset.reader.index[k] for k in dataset.image_keys], np.int64)
        rec_path = dataset.rec_path
    read = _BatchReader(rec_path, skip_bad)
    records = tf.data.Dataset.from_tensor_slices(offsets)
    if num_pipelines > 1:
        records = records.shard(num_pipelines, pipeline_id)
    if training:
        records = records.shuffle(len(offsets), seed=seed, reshuffle_each_iteration=True).repeat()

    def read_batch(batch):
        encoded, labels = tf.numpy_function(read, [batch], [tf.string, tf.int64], stateful=False)
        encoded.set_shape([None])
        labels.set_shape([None])
        return encoded, labels

    records = records.batch(READ_BATCH).map(read_batch, num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True).unbatch()
    if skip_bad:
        records = records.filter(lambda encoded, label: label >= 0)
    return records

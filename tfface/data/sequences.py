"""Unlabelled face sequences for SeqFace training: a frame index, random access, mixed batches.

SeqFace (https://arxiv.org/abs/1803.06524) trains on labelled identity images together with
frames of unlabelled face sequences. Sequence frames are stored in the one TFRecord schema with
``image/sequence_id >= 0`` (a folder of sequence folders is converted by
:func:`tfface.data.folders.dataset_to_tfrecords` with ``sequences=True``). Batches of whole
sequences are drawn by :class:`tfface.data.samplers.SequenceAwareSampler` over a
:class:`SequenceIndex` (byte offset and sequence id of every frame), the frames are read by
offset and decoded by the training pipeline's :func:`tfface.data.pipeline.preprocess`, and
:func:`mix` appends them to the labelled images of the same (per-replica) batch.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from typing import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from tfface.data import pipeline, tfrecord
from tfface.data.samplers import SequenceAwareSampler
from tfface.core.errors import UserError

_HEADER = 12  # uint64 length + uint32 masked CRC of the length; the data's CRC (4 bytes) follows it


@dataclasses.dataclass(frozen=True)
class SequenceIndex:
    """Where every frame of a sequence dataset is, and its sequence (all arrays (N,), file order)."""

    shards: tuple[str, ...]
    shard: np.ndarray  # index into ``shards``
    offset: np.ndarray  # byte offset of the serialized example in its shard
    length: np.ndarray  # its length in bytes
    sequence_ids: np.ndarray  # ``image/sequence_id``

    @property
    def num_sequences(self) -> int:
        """Sequence ids run 0..S-1 (one DSA agent each)."""
        return int(self.sequence_ids.max()) + 1


def record_offsets(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, lengths) of the serialized records of one TFRecord file, from their headers."""
    offsets, lengths = [], []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        position = 0
        while position < size:
            header = f.read(_HEADER)
            if len(header) < _HEADER:
                raise UserError(f"'{path}': truncated TFRecord file (a record header ends at byte {size})")
            (length,) = struct.unpack("<Q", header[:8])
            offsets.append(position + _HEADER)
            lengths.append(length)
            position += _HEADER + length + 4
            f.seek(position)
        if position != size:
            raise UserError(f"'{path}': truncated TFRecord file (the last record needs {position} bytes, file has {size})")
    return np.array(offsets, np.int64), np.array(lengths, np.int64)


def index_sequences(data_dir: str, flag: str = "--sequence_data_dir", cache: str | None = None) -> SequenceIndex:
    """Indexes the TFRecord shards of ``data_dir``; every example must be a sequence frame.

    Reading every frame's sequence id is a pass over the data; with ``cache`` (an ``.npz`` path,
    e.g. in the run directory) the index is stored there and reused while the shards keep their
    names and sizes.
    """
    try:
        shards = tfrecord.list_shards(data_dir)
    except UserError:
        raise UserError(f"{flag}: no *.tfrecord shards in '{data_dir}' (a TFRecord directory or sequence folders)") from None
    signature = np.array([f"{os.path.abspath(p)}:{os.path.getsize(p)}" for p in shards])
    index = _load_index(cache, signature) if cache else None
    if index is None:
        index = _build_index(shards)
        if cache:
            tmp = f"{cache}.tmp-{os.getpid()}.npz"
            np.savez(tmp, signature=signature, **{k: v for k, v in dataclasses.asdict(index).items() if k != "shards"})
            os.replace(tmp, cache)
    sequence_ids = index.sequence_ids
    missing = int(np.sum(sequence_ids < 0))
    if sequence_ids.size == 0 or missing:
        raise UserError(
            f"{flag}: {missing} of {sequence_ids.size} examples in '{data_dir}' have no image/sequence_id "
            "(expected frames of unlabelled sequences: a folder of sequence folders, or TFRecords written with sequence ids)"
        )
    logging.info("%d frames of %d sequences in %s", sequence_ids.size, len(np.unique(sequence_ids)), data_dir)
    return index


def _build_index(shards: list[str]) -> SequenceIndex:
    located = [record_offsets(path) for path in shards]
    spec = {"image/sequence_id": tfrecord.FEATURE_SPEC["image/sequence_id"]}
    records = tf.data.TFRecordDataset(shards).batch(4096)  # the files one after the other, like the offsets
    ids = []
    for batch in records:
        ids.append(tf.io.parse_example(batch, spec)["image/sequence_id"].numpy())
        if len(ids) % 100 == 0:
            logging.info("indexing sequence frames: %d read", 4096 * len(ids))
    return SequenceIndex(
        shards=tuple(shards),
        shard=np.concatenate([np.full(len(o), i, np.int32) for i, (o, _) in enumerate(located)]),
        offset=np.concatenate([o for o, _ in located]),
        length=np.concatenate([n for _, n in located]),
        sequence_ids=np.concatenate(ids) if ids else np.zeros(0, np.int64),
    )


def _load_index(cache: str, signature: np.ndarray) -> SequenceIndex | None:
    """The cached index when it was made from the same shards (names and sizes), else None."""
    if not os.path.isfile(cache):
        return None
    with np.load(cache) as stored:
        if stored["signature"].tolist() != signature.tolist():
            return None
        arrays = {k: stored[k] for k in ("shard", "offset", "length", "sequence_ids")}
    return SequenceIndex(shards=tuple(entry.rsplit(":", 1)[0] for entry in signature.tolist()), **arrays)


class FrameReader:
    """Reads serialized examples by index (``os.pread``: thread-safe, releases the GIL)."""

    def __init__(self, index: SequenceIndex):
        self.index = index
        self._files = [os.open(path, os.O_RDONLY) for path in index.shards]

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        index = self.index
        return np.array(
            [os.pread(self._files[index.shard[i]], int(index.length[i]), int(index.offset[i])) for i in indices],
            dtype=object,
        )

    def __del__(self):
        for fd in getattr(self, "_files", ()):
            os.close(fd)


def sequence_batches(
    index: SequenceIndex, sequences_per_batch: int, frames_per_sequence: int, seed: int, skip: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless ``(frame indices (n,), augmentation seeds (n, 2))`` batches of whole sequences.

    ``sequences_per_batch`` distinct sequences, ``frames_per_sequence`` frames each (consecutive),
    drawn by :class:`SequenceAwareSampler`; a function of ``seed`` only, so skipping the first
    ``skip`` batches resumes the stream exactly.
    """
    size = sequences_per_batch * frames_per_sequence
    sampler = SequenceAwareSampler(index.sequence_ids, size, sequences_per_batch, frames_per_sequence, seed=seed)
    rng = np.random.default_rng([seed, 1])
    count = 0
    while True:
        for indices in sampler:
            seeds = rng.integers(0, 2**31 - 1, (size, 2))
            if count >= skip:
                yield indices, seeds
            count += 1


def sequence_dataset(
    index: SequenceIndex,
    sequences_per_batch: int,
    frames_per_sequence: int,
    image_size: tuple[int, int],
    augment: pipeline.Augment | None = None,
    seed: int = 0,
    skip: int = 0,
) -> tf.data.Dataset:
    """Endless ``(images (n, H, W, 3) float32, sequence_ids (n,) int64)`` batches of
    :func:`sequence_batches`, decoded and augmented like the labelled images."""
    size = sequences_per_batch * frames_per_sequence
    batches = tf.data.Dataset.from_generator(
        lambda: sequence_batches(index, sequences_per_batch, frames_per_sequence, seed, skip),
        output_signature=(tf.TensorSpec([size], tf.int64), tf.TensorSpec([size, 2], tf.int64)),
    )
    reader = FrameReader(index)

    def read(indices, seeds):
        serialized = tf.numpy_function(reader, [indices], tf.string, stateful=False)
        serialized.set_shape([size])
        return serialized, seeds

    def parse(serialized, example_seed):
        features = tfrecord.parse_example(serialized)
        image = pipeline.preprocess(features["image/encoded"], image_size, augment, example_seed)
        return image, features["image/sequence_id"]

    frames = batches.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    frames = frames.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return frames.batch(size, drop_remainder=True)


def split_batch(batch_size: int, sequence_ratio: float, frames_per_sequence: int) -> tuple[int, int]:
    """(labelled images, sequences) of one (per-replica) batch: the sequence frames are
    ``sequence_ratio`` of it, rounded to whole sequences; a clear error when either part is empty."""
    sequences = int(round(batch_size * sequence_ratio / frames_per_sequence))
    labelled = batch_size - sequences * frames_per_sequence
    if sequences < 1 or labelled < 1:
        raise UserError(
            f"--sequence_ratio={sequence_ratio}: a (per-replica) batch of {batch_size} with --frames_per_sequence="
            f"{frames_per_sequence} gets {max(sequences, 0)} sequence(s) and {labelled} labelled image(s); expected "
            "at least one of each (change --batch_size, --sequence_ratio or --frames_per_sequence)"
        )
    return labelled, sequences


def mix(labelled: tf.data.Dataset, sequences: tf.data.Dataset) -> tf.data.Dataset:
    """``(images, labels, sequence_ids)`` batches: labelled images first (sequence id -1), then
    the sequence frames (label -1)."""

    def concat(images_labels, frames_ids):
        images, labels = images_labels
        frames, sequence_ids = frames_ids
        return (
            tf.concat([images, frames], 0),
            tf.concat([labels, -tf.ones(tf.shape(sequence_ids), tf.int32)], 0),
            tf.concat([-tf.ones(tf.shape(labels), tf.int32), tf.cast(sequence_ids, tf.int32)], 0),
        )

    return tf.data.Dataset.zip(labelled, sequences).map(concat).prefetch(tf.data.AUTOTUNE)

"""Batch samplers: the sequence-aware sampler of SeqFace, and P x K identity batches (triplets).

SeqFace (https://arxiv.org/abs/1803.06524) trains on labelled identity images together with
frames of unlabelled face sequences (``image/sequence_id >= 0`` in the TFRecord schema, -1
otherwise). Every batch holds both kinds, and several frames of each sampled sequence so that
the DSA loss sees frames of a sequence together.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from tfface.data import pipeline, tfrecord


class SequenceAwareSampler:
    """Index batches: labelled images plus ``frames_per_sequence`` frames of each of a few sequences.

    One epoch visits every labelled image once, in random order; each batch is completed with
    ``sequences_per_batch`` sequences drawn at random (without replacement within the batch),
    ``frames_per_sequence`` frames each (without replacement when the sequence is long enough,
    with replacement otherwise). Batches are index arrays into the dataset, so the caller maps
    them to examples (``tf.data`` ``from_generator``, or a ``gather`` on cached arrays).

    Args:
        sequence_ids: (N,) int, ``image/sequence_id`` of every example (-1: labelled image).
        batch_size: examples per batch.
        sequences_per_batch: sequences per batch (0: labelled images only).
        frames_per_sequence: frames of each sampled sequence.
        drop_remainder: drop the last incomplete batch of labelled images (True).
        seed: for the random generator.

    Example:
        >>> sampler = SequenceAwareSampler(seq_ids, batch_size=256, sequences_per_batch=16, frames_per_sequence=4)
        >>> for indices in sampler: ...   # 192 labelled images + 16 x 4 frames
    """

    def __init__(
        self,
        sequence_ids: np.ndarray,
        batch_size: int,
        sequences_per_batch: int,
        frames_per_sequence: int = 4,
        drop_remainder: bool = True,
        seed: int | None = None,
    ):
        seq = np.asarray(sequence_ids, np.int64).reshape(-1)
        self.num_sequence_frames = sequences_per_batch * frames_per_sequence
        self.num_labelled = batch_size - self.num_sequence_frames
        if sequences_per_batch < 0 or frames_per_sequence < 1 or self.num_labelled < 0:
            raise ValueError(
                f"expected sequences_per_batch >= 0, frames_per_sequence >= 1 and "
                f"sequences_per_batch * frames_per_sequence <= batch_size; got {sequences_per_batch}, "
                f"{frames_per_sequence}, {batch_size}"
            )
        self.labelled = np.flatnonzero(seq < 0)
        order = np.argsort(seq, kind="stable")
        order = order[seq[order] >= 0]
        ids, starts = np.unique(seq[order], return_index=True)
        self.sequences = dict(zip(ids.tolist(), np.split(order, starts[1:]))) if ids.size else {}
        if sequences_per_batch > len(self.sequences):
            raise ValueError(f"sequences_per_batch={sequences_per_batch} but only {len(self.sequences)} sequences")
        if self.num_labelled > 0 and self.labelled.size == 0:
            raise ValueError("the batch asks for labelled images but every example is a sequence frame")
        self.batch_size = int(batch_size)
        self.sequences_per_batch = int(sequences_per_batch)
        self.frames_per_sequence = int(frames_per_sequence)
        self.drop_remainder = bool(drop_remainder)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        if self.num_labelled == 0:
            return max(1, len(self.sequences) // max(self.sequences_per_batch, 1))
        full, rest = divmod(self.labelled.size, self.num_labelled)
        return full + (0 if self.drop_remainder or rest == 0 else 1)

    def _frames(self) -> np.ndarray:
        if self.sequences_per_batch == 0:
            return np.zeros(0, np.int64)
        keys = np.fromiter(self.sequences, np.int64)
        chosen = self.rng.choice(keys, size=self.sequences_per_batch, replace=False)
        parts = []
        for key in chosen:
            frames = self.sequences[int(key)]
            replace = frames.size < self.frames_per_sequence
            parts.append(self.rng.choice(frames, size=self.frames_per_sequence, replace=replace))
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[np.ndarray]:
        labelled = self.rng.permutation(self.labelled)
        for b in range(len(self)):
            part = labelled[b * self.num_labelled : (b + 1) * self.num_labelled]
            yield np.concatenate([part, self._frames()]).astype(np.int64)


def pk_dataset(
    shards: Sequence[str],
    people_per_batch: int,
    images_per_person: int,
    image_size: tuple[int, int],
    augment: pipeline.Augment | None = None,
    seed: int = 0,
    skip: int = 0,
    shuffle_buffer: int = 4096,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Infinite P x K batches for triplet training, as facenet's ``sample_people``.

    Every batch holds ``images_per_person`` (K) images of each of ``people_per_batch`` (P)
    identities, one identity after the other: the shuffled record stream is grouped by label
    (``group_by_window``) into windows of K images, and P windows make a batch. An identity with
    fewer than K images fills its window from the next pass over the data (repeats); two windows
    of one identity may fall into the same batch. Deterministic given ``seed``; ``skip`` examples
    (whole batches: a multiple of P x K) are passed over before decoding.
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    records = pipeline._tfrecords(shards, True, seed, shuffle_buffer, pipelines, pipeline_id)  # noqa: SLF001  (the same stream)
    label_feature = {"image/class/label": tfrecord.FEATURE_SPEC["image/class/label"]}
    windows = records.group_by_window(
        key_func=lambda record: tf.io.parse_single_example(record, label_feature)["image/class/label"],
        reduce_func=lambda _, window: window.batch(images_per_person, drop_remainder=True),
        window_size=images_per_person,
    )
    examples = tf.data.Dataset.zip(windows.unbatch(), tf.data.Dataset.random(seed=seed).batch(2)).skip(skip)

    def parse(serialized, example_seed):
        features = tfrecord.parse_example(serialized)
        image = pipeline.preprocess(features["image/encoded"], image_size, augment, example_seed)
        return image, tf.cast(features["image/class/label"], tf.int32)

    examples = examples.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return examples.batch(people_per_batch * images_per_person, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

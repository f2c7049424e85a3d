"""tf.data input pipeline over TFRecord shards of the tfface schema.

Reads shards interleaved, decodes and resizes in parallel through the image contract
(:mod:`tfface.core.images`, the same ops evaluation and serving use), augments (random crop, flip, rotation) and batches. Images leave the pipeline as
float32 pixels in [0, 255]: standardization is the model's first layer (the preprocessing
contract), so it is applied identically in training, evaluation and serving.

With a ``seed`` the output is deterministic: file order, shuffling and every augmentation use
stateless random ops keyed by a seeded per-example stream.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import tensorflow as tf

from tfface.core import images
from tfface.data import rec_source, tfrecord


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation (facenet's flags)."""

    random_crop: bool = False
    random_flip: bool = False
    random_rotate: bool = False
    max_rotation_degrees: float = 10.0
    random_erase: float = 0.0  # probability of erasing a random rectangle (Zhong et al., random erasing)


def rotate(image: tf.Tensor, radians: tf.Tensor) -> tf.Tensor:
    """Rotates one float image (H, W, C) about its centre, reflecting at the borders."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    c, s = tf.cos(radians), tf.sin(radians)
    # Maps each output pixel (x, y) to its input location.
    transform = tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]


ERASE_AREA = (0.02, 0.4)  # share of the image a random erasing rectangle covers
ERASE_ASPECT = (0.3, 1 / 0.3)  # its height / width


def erase_box(height: tf.Tensor, width: tf.Tensor, draws: tf.Tensor) -> tf.Tensor:
    """``[top, left, box_height, box_width]`` (int32) of the random erasing rectangle for four
    uniform ``draws`` in [0, 1): area, log aspect ratio, top and left offsets (Zhong et al.,
    "Random Erasing Data Augmentation", AAAI 2020; sides clipped to the image)."""
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = h * w * (ERASE_AREA[0] + draws[0] * (ERASE_AREA[1] - ERASE_AREA[0]))
    low, high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = tf.exp(low + draws[1] * (high - low))
    box_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, h)
    box_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, w)
    top, left = tf.floor(draws[2] * (h - box_h + 1.0)), tf.floor(draws[3] * (w - box_w + 1.0))
    return tf.cast(tf.stack([top, left, box_h, box_w]), tf.int32)


def random_erase(image: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """With ``probability``, fills a random rectangle (:func:`erase_box`) of one float image
    (H, W, C) in [0, 255] with uniform noise in [0, 255]."""
    shape = tf.shape(image)
    top, left, box_h, box_w = tf.unstack(erase_box(shape[0], shape[1], tf.random.stateless_uniform([4], _fold(seed, 1))))
    rows, cols = tf.range(shape[0]), tf.range(shape[1])
    inside = tf.logical_and(
        tf.logical_and(rows >= top, rows < top + box_h)[:, None], tf.logical_and(cols >= left, cols < left + box_w)[None, :]
    )
    inside = tf.logical_and(inside, tf.random.stateless_uniform([], _fold(seed, 2)) < probability)
    noise = tf.random.stateless_uniform(shape, _fold(seed, 3), 0.0, 255.0)
    return tf.where(inside[:, :, None], noise, image)


def preprocess(
    encoded: tf.Tensor,
    image_size: tuple[int, int],
    augment: Augment | None = None,
    seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """Decodes and prepares one image: float32 (H, W, 3) pixels in [0, 255].

    Without ``random_crop`` an image of another size is resized to ``image_size``; with it,
    an ``image_size`` window is cropped at a random place (images smaller than the window are
    resized up first), as facenet crops 160 px out of 182 px aligned faces.
    ``seed``: a (2,) int tensor, required when ``augment`` is given.
    """
    image = images.decode(encoded)
    height, width = image_size
    augment = augment or Augment()
    if augment.random_crop:
        shape = tf.shape(image)
        too_small = tf.logical_or(shape[0] < height, shape[1] < width)
        image = tf.cond(too_small, lambda: images.resize(image, image_size), lambda: image)
        image = tf.image.stateless_random_crop(image, [height, width, 3], seed=_fold(seed, 1))
    else:
        image = images.resize(image, image_size)
    image = tf.cast(image, tf.float32)
    if augment.random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=_fold(seed, 2))
    if augment.random_rotate:
        limit = math.radians(augment.max_rotation_degrees)
        angle = tf.random.stateless_uniform([], _fold(seed, 3), -limit, limit)
        image = rotate(image, angle)
    if augment.random_erase > 0:
        image = random_erase(image, augment.random_erase, _fold(seed, 4))
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape([height, width, 3])
    return image


def _fold(seed: tf.Tensor, salt: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, salt)


def make_dataset(
    shards: Sequence[str] | str,
    batch_size: int,
    image_size: tuple[int, int],
    training: bool = True,
    augment: Augment | None = None,
    seed: int | None = None,
    shuffle_buffer: int = 4096,
    input_context: tf.distribute.InputContext | None = None,
    drop_remainder: bool | None = None,
    skip: int = 0,
) -> tf.data.Dataset:
    """Builds the ``(images, labels)`` dataset; infinite and shuffled when ``training``.

    Args:
        shards: TFRecord files (see :func:`tfface.data.tfrecord.list_shards`), or the path of an
            InsightFace ``.rec`` directory (see :mod:`tfface.data.rec_source`).
        batch_size: batch size of this input pipeline (per replica under tf.distribute).
        image_size: (height, width) the model expects.
        training: repeat forever, shuffle, augment; otherwise one ordered pass.
        augment: augmentation; ignored when not ``training``.
        seed: makes order and augmentation deterministic.
        shuffle_buffer: examples held for shuffling.
        input_context: from ``strategy.distribute_datasets_from_function``; shards the input.
        drop_remainder: defaults to ``training``.
        skip: examples of this input pipeline to pass over before decoding (resuming
            mid-epoch: the rest of the stream is exactly what follows them).
    """
    if seed is None:
        seed = int(tf.random.uniform([], 0, 2**31 - 1, tf.int64).numpy())
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    from_rec = isinstance(shards, str)
    if from_rec:  # an InsightFace .rec directory: (encoded, label) pairs, fully shuffled
        records = rec_source.read_records(shards, training, seed, pipelines, pipeline_id)
    else:
        records = _tfrecords(shards, training, seed, shuffle_buffer, pipelines, pipeline_id)
    examples = tf.data.Dataset.zip(records, tf.data.Dataset.random(seed=seed).batch(2)).skip(skip)
    augment = augment if training else None

    def parse(record, example_seed):
        if from_rec:
            encoded, label = record
        else:
            features = tfrecord.parse_example(record)
            encoded, label = features["image/encoded"], features["image/class/label"]
        image = preprocess(encoded, image_size, augment, example_seed)
        return image, tf.cast(label, tf.int32)

    examples = examples.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    drop = training if drop_remainder is None else drop_remainder
    return examples.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)


def _tfrecords(shards: Sequence[str], training: bool, seed: int, shuffle_buffer: int, pipelines: int,
               pipeline_id: int) -> tf.data.Dataset:
    """Serialized examples of the shards: interleaved, this pipeline's share, shuffled when training."""
    shard_files = len(shards) >= pipelines  # else every pipeline reads all files, keeps 1/N
    files = tf.data.Dataset.from_tensor_slices(list(shards))
    if pipelines > 1 and shard_files:
        files = files.shard(pipelines, pipeline_id)
    if training:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True).repeat()
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(shards), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if pipelines > 1 and not shard_files:
        records = records.shard(pipelines, pipeline_id)
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return records


def distribute(
    strategy: tf.distribute.Strategy,
    shards: Sequence[str],
    global_batch_size: int,
    image_size: tuple[int, int],
    skip_steps: int = 0,
    **kwargs,
) -> tf.distribute.DistributedDataset:
    """:func:`make_dataset` per input pipeline, batched per replica, for ``strategy.run``.

    ``skip_steps``: global batches already consumed (each pipeline feeds its replicas one
    per-replica batch each, so it passes over ``skip_steps * global_batch_size / pipelines``).
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(global_batch_size)
        skip = skip_steps * global_batch_size // context.num_input_pipelines
        return make_dataset(shards, per_replica, image_size, input_context=context, skip=skip, **kwargs)

    return strategy.distribute_datasets_from_function(dataset_fn)

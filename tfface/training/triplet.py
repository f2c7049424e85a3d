"""Triplet training (FaceNet's second recipe) on the same loop, run directory, resume and export.

Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering", CVPR 2015
(https://arxiv.org/abs/1503.03832), as in davidsandberg/facenet ``train_tripletloss.py``:
P x K batches (``people_per_batch`` identities, ``images_per_person`` images each), L2-normalised
embeddings, squared euclidean distances and a margin ``alpha``. Mining:

- ``offline`` (facenet): the batch is embedded without gradients, ``select_triplets`` picks a
  negative violating the margin for every anchor/positive pair, and one step trains on up to
  ``batch_size // 3`` of those triplets (facenet runs ``nrof_triplets / batch_size`` steps per
  selection; here every step samples and selects anew).
- ``semihard`` / ``batch_hard``: online mining over the whole batch.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfface import losses
from tfface.data import samplers
from tfface.core.errors import UserError, check_choice
from tfface.training.trainer import TrainConfig, Trainer, epoch_seed

MINING = ("offline", "semihard", "batch_hard")


@dataclasses.dataclass(frozen=True)
class TripletOptions:
    """facenet's triplet flags, plus the mining strategy."""

    people_per_batch: int = 45
    images_per_person: int = 40
    alpha: float = 0.2
    mining: str = "offline"


def hard_pair_accuracy(labels: tf.Tensor, embeddings: tf.Tensor) -> tf.Tensor:
    """Fraction of anchors whose farthest positive is nearer than their nearest negative."""
    d = losses.pairwise_distances(embeddings)
    same = tf.equal(labels[:, None], labels[None, :])
    other = tf.logical_not(tf.cast(tf.eye(tf.shape(labels)[0]), tf.bool))
    positive, negative = tf.logical_and(same, other), tf.logical_not(same)
    valid = tf.logical_and(tf.reduce_any(positive, 1), tf.reduce_any(negative, 1))
    far_positive = tf.reduce_max(tf.where(positive, d, -np.inf), 1)
    near_negative = tf.reduce_min(tf.where(negative, d, np.inf), 1)
    hits = tf.logical_and(valid, far_positive < near_negative)
    return tf.math.divide_no_nan(tf.reduce_sum(tf.cast(hits, tf.float32)), tf.reduce_sum(tf.cast(valid, tf.float32)))


class TripletTrainer(Trainer):
    """:class:`Trainer` with a triplet loss instead of a classification head.

    ``config.batch_size`` is facenet's: images per training step in offline mode (3 per
    triplet); a sampled batch always holds ``people_per_batch * images_per_person`` images.
    Under N replicas each replica mines within its ``people_per_batch / N`` identities.
    """

    def __init__(self, config: TrainConfig, options: TripletOptions):
        check_choice(options.mining, MINING, "triplet_mining")
        self.options = options
        self.triplets_per_step = config.batch_size // 3
        if options.mining == "offline" and self.triplets_per_step < 1:
            raise UserError(f"--batch_size: offline triplet mining needs >= 3 (one triplet), got {config.batch_size}")
        if options.images_per_person < 2 or options.people_per_batch < 2:
            raise UserError(
                f"--people_per_batch/--images_per_person: triplets need >= 2 of each, got "
                f"{options.people_per_batch} x {options.images_per_person}"
            )
        super().__init__(dataclasses.replace(config, batch_size=options.people_per_batch * options.images_per_person))
        if isinstance(self.shards, str):
            raise UserError(f"--data_dir: triplet training reads TFRecord shards, not the .rec directory '{self.shards}'")
        if options.people_per_batch % self.strategy.num_replicas_in_sync:
            raise UserError(
                f"--people_per_batch={options.people_per_batch}: expected a multiple of the "
                f"{self.strategy.num_replicas_in_sync} replicas"
            )

    def _build_head(self) -> None:
        return None

    def _dataset(self, epoch: int, skip_steps: int) -> tf.distribute.DistributedDataset:
        config, options = self.config, self.options

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = context.get_per_replica_batch_size(config.batch_size)
            return samplers.pk_dataset(
                self.shards, per_replica // options.images_per_person, options.images_per_person, config.image_size,
                config.augment, epoch_seed(config.seed, epoch), skip=skip_steps * config.batch_size // context.num_input_pipelines,
                input_context=context,
            )

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _replica_step(self):
        replicas, options = self.strategy.num_replicas_in_sync, self.options
        alpha, per_step = options.alpha, self.triplets_per_step

        def embed(images, training):
            return tf.math.l2_normalize(tf.cast(self.embedder(images, training=training), tf.float32), 1)

        def select(embeddings, seed_source):
            rng = np.random.default_rng(np.frombuffer(seed_source.tobytes(), np.uint32))  # deterministic per batch
            people = embeddings.shape[0] // options.images_per_person
            triplets, _ = losses.select_triplets(embeddings, [options.images_per_person] * people, people, alpha, rng)
            return triplets[:per_step]

        def step(images, labels):
            if options.mining == "offline":
                chosen = embed(images, False)
                triplets = tf.numpy_function(select, [chosen, chosen], tf.int64, stateful=False)
                found = tf.shape(triplets)[0] > 0
                triplets = tf.cond(found, lambda: triplets, lambda: tf.zeros([1, 3], tf.int64))  # no empty batches
            with tf.GradientTape() as tape:
                if options.mining == "offline":
                    selected = embed(tf.gather(images, tf.reshape(triplets, [-1])), True)
                    anchor, positive, negative = tf.unstack(tf.reshape(selected, [-1, 3, tf.shape(selected)[-1]]), axis=1)
                    triplet = losses.triplet_loss(anchor, positive, negative, alpha) * tf.cast(found, tf.float32)
                else:
                    chosen = embed(images, True)
                    mine = losses.triplet_semihard_loss if options.mining == "semihard" else losses.triplet_batch_hard_loss
                    triplet = mine(labels, chosen, alpha, squared=True)
                reg = self._regularization()
                loss = triplet / replicas + reg
            skipped = self._apply(loss, tape)
            accuracy = hard_pair_accuracy(labels, chosen)
            return tf.stack([loss, triplet / replicas, reg, accuracy / replicas, 0.0, skipped])

        return step

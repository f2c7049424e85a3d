"""SeqFace training: labelled identities plus unlabelled face sequences, LSR + DSA losses.

Hu et al., "SeqFace: Make full use of sequence information for face recognition" (2018),
https://arxiv.org/abs/1803.06524, as its Caffe ``train_val.prototxt``: every batch holds
labelled images and frames of unlabelled sequences (the seed: 32 + 32), the head's softmax is
trained with the LSR loss (uniform target over the identities for sequence frames, weight 1) and
the embedding with the DSA loss (weight 0.04) against one agent per identity and per sequence.

Every replica's batch holds ``sequence_ratio`` of sequence frames as whole sequences
(``frames_per_sequence`` frames of each sampled sequence, :mod:`tfface.data.sequences`), so the
DSA pull of each replica sees frames of one sequence together; agent updates are summed over the
replicas. The DSA layer (agents, iteration counter: its warm-up) is part of the checkpoint, and
the sequence stream of epoch ``e`` depends only on ``(seed, e)``, so resuming stays exact.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from tfface import heads, losses
from tfface.data import pipeline, sequences
from tfface.core.errors import UserError, check_unit_interval
from tfface.training.trainer import TrainConfig, Trainer, epoch_seed

INDEX_FILE = "sequence_index.npz"  # in the run directory: the sequence frames' offsets and ids


@dataclasses.dataclass(frozen=True)
class SeqFaceOptions:
    """The SeqFace flags of ``train_softmax`` (defaults: the seed's ``train_val.prototxt``)."""

    sequence_data_dir: str
    sequence_ratio: float = 0.5
    frames_per_sequence: int = 4
    dsa_loss_weight: float = 0.04
    dsa_lambda: float = 0.5
    dsa_alpha: float = 2.0
    dsa_beta: float = 1.0
    dsa_agent_rate: float = 0.05
    dsa_dropout_ratio: float = 0.99
    dsa_center_iter: int = 0
    dsa_diff_iter: int = 0


def check_options(options: SeqFaceOptions, partial_fc: bool, center_loss_factor: float) -> None:
    """Flag-level checks (no files read): one-line ``UserError`` naming the flag."""
    if not 0.0 < options.sequence_ratio < 1.0:
        raise UserError(f"--sequence_ratio: expected a share of the batch in (0, 1), got {options.sequence_ratio}")
    if options.frames_per_sequence < 1:
        raise UserError(f"--frames_per_sequence: expected >= 1, got {options.frames_per_sequence}")
    if options.dsa_loss_weight < 0:
        raise UserError(f"--dsa_loss_weight: expected >= 0, got {options.dsa_loss_weight}")
    check_unit_interval(options.dsa_lambda, "--dsa_lambda")
    if options.dsa_alpha < 1.0 or options.dsa_beta < 0.0:
        raise UserError(f"--dsa_alpha/--dsa_beta: expected alpha >= 1 and beta >= 0, got {options.dsa_alpha}, {options.dsa_beta}")
    check_unit_interval(options.dsa_agent_rate, "--dsa_agent_rate")
    if not 0.0 <= options.dsa_dropout_ratio < 1.0:
        raise UserError(f"--dsa_dropout_ratio: expected a value in [0, 1), got {options.dsa_dropout_ratio}")
    if options.dsa_center_iter < 0 or options.dsa_diff_iter < 0:
        raise UserError(f"--dsa_center_iter/--dsa_diff_iter: expected >= 0, got {options.dsa_center_iter}, {options.dsa_diff_iter}")
    if partial_fc:
        # Every registered head gives logits over all identities and takes label -1 ("no target",
        # see tfface.heads.base); Partial FC's sampled centres cannot give LSR's uniform target.
        raise UserError("--partial_fc: SeqFace's LSR loss needs the logits of every identity; drop --partial_fc or --sequence_data_dir")
    if center_loss_factor > 0:
        raise UserError("--center_loss_factor: sequence frames have no identity; SeqFace's DSA loss (--dsa_loss_weight) replaces it")


class SeqFaceTrainer(Trainer):
    """:class:`Trainer` on mixed labelled + sequence batches with the LSR and DSA losses.

    The step's metrics are the base trainer's, with the weighted DSA term in the ``center_loss``
    slot (``Cl`` in the log line, ``train/center_loss`` in TensorBoard) and the accuracy over the
    labelled images only.
    """

    def __init__(self, config: TrainConfig, options: SeqFaceOptions):
        check_options(options, config.partial_fc, config.center_loss_factor)
        self.options = options
        # Before building the model (fail fast); cached in the run directory for resumed runs.
        os.makedirs(config.run_dir, exist_ok=True)
        self.index = sequences.index_sequences(options.sequence_data_dir, cache=os.path.join(config.run_dir, INDEX_FILE))
        super().__init__(config)
        if isinstance(self.strategy, tf.distribute.TPUStrategy):
            raise UserError("--sequence_data_dir: sequence frames are read by Python (tf.data from_generator), not on TPUs")
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise UserError(f"--batch_size={config.batch_size}: expected a multiple of the {replicas} replicas")
        self.labelled_per_replica, per_replica = sequences.split_batch(
            config.batch_size // replicas, options.sequence_ratio, options.frames_per_sequence
        )
        available = len(np.unique(self.index.sequence_ids))
        if per_replica > available:
            raise UserError(
                f"--sequence_ratio={options.sequence_ratio}: a (per-replica) batch needs {per_replica} distinct sequences, "
                f"'{options.sequence_data_dir}' has {available}"
            )
        num_agents = self.num_classes + self.index.num_sequences
        with self.strategy.scope():
            self.dsa = losses.DSALoss(
                self.num_classes, self.index.num_sequences, config.embedding_size, options.dsa_lambda,
                options.dsa_alpha, options.dsa_beta, options.dsa_agent_rate,
                max(1, int(num_agents * (1.0 - options.dsa_dropout_ratio))) if options.dsa_dropout_ratio else None,
                options.dsa_center_iter, options.dsa_diff_iter, seed=config.seed,
            )
            # What else decides the sequence stream and the agents; a resumed run must use the same.
            self.sequence_stream = tf.Variable(self._sequence_stream(), dtype=tf.int64, trainable=False, name="sequence_stream")
        self.checkpoint.dsa = self.dsa
        self.checkpoint.sequence_stream = self.sequence_stream

    def _sequence_stream(self) -> list[int]:
        options = self.options
        return [round(options.sequence_ratio * 1e6), options.frames_per_sequence, self.index.sequence_ids.size,
                self.index.num_sequences]

    def _check_stream(self, restored: str | None) -> None:
        super()._check_stream(restored)
        saved = [int(v) for v in self.sequence_stream.numpy()]
        if restored and saved != self._sequence_stream():
            raise UserError(
                f"--sequence_data_dir/--sequence_ratio/--frames_per_sequence: the run in {self.config.run_dir} was trained "
                f"with ratio {saved[0] / 1e6}, {saved[1]} frames per sequence on {saved[2]} frames of {saved[3]} sequences; "
                "resume with those (or use a new --subdir)"
            )

    def input_fn(self, epoch: int, skip_steps: int) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
        """The ``dataset_fn`` of epoch ``epoch``, ``skip_steps`` global batches in: per-replica
        batches of labelled images followed by whole sequences (see :func:`sequences.mix`)."""
        config, options = self.config, self.options
        seed = epoch_seed(config.seed, epoch)

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
            num_labelled, num_sequences = sequences.split_batch(
                context.get_per_replica_batch_size(config.batch_size), options.sequence_ratio, options.frames_per_sequence
            )
            labelled = pipeline.make_dataset(
                self.shards, num_labelled, config.image_size, training=True, augment=config.augment,
                seed=seed, input_context=context, skip=skip_steps * num_labelled * replicas_here,
            )
            frames = sequences.sequence_dataset(
                self.index, num_sequences, options.frames_per_sequence, config.image_size, config.augment,
                seed=int(np.random.SeedSequence([seed, context.input_pipeline_id]).generate_state(1)[0]),
                skip=skip_steps * replicas_here,
            )
            return sequences.mix(labelled, frames)

        return dataset_fn

    def _dataset(self, epoch: int, skip_steps: int) -> tf.distribute.DistributedDataset:
        return self.strategy.distribute_datasets_from_function(self.input_fn(epoch, skip_steps))

    def _replica_step(self):
        config, replicas = self.config, self.strategy.num_replicas_in_sync
        weight, labelled_total = self.options.dsa_loss_weight, float(self.labelled_per_replica * replicas)

        def step(images, labels, sequence_ids):
            with tf.GradientTape() as tape:
                embeddings = self.embedder(images, training=True)
                logits = self.head([embeddings, losses.mask_sequence_labels(labels, sequence_ids)], training=True)
                per_example = losses.lsr_loss(labels, logits, sequence_ids)
                xent = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
                reg = self._regularization()
                dsa = weight * self.dsa(embeddings, labels, sequence_ids, training=True)
                extra = dsa
                if config.prelogits_norm_loss_factor > 0:
                    extra += config.prelogits_norm_loss_factor * losses.prelogits_norm_loss(embeddings, config.prelogits_norm_p)
                loss = xent + reg + extra / replicas  # extra terms are per-replica batch means
            skipped = self._apply(loss, tape)
            predictions = heads.head_predictions(self.head([embeddings, -tf.ones_like(labels)], training=False))
            hits = tf.logical_and(sequence_ids < 0, tf.equal(predictions, labels))
            accuracy = tf.reduce_sum(tf.cast(hits, tf.float32)) / labelled_total
            return tf.stack([loss, xent, reg, accuracy, dsa / replicas, skipped])

        return step

"""The training loop: one ``tf.function`` step run with ``strategy.run``, for every strategy.

Not ``Model.fit``: Keras 3's ``fit`` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585), while this loop runs the same code on one device, N mirrored
replicas, several workers or a TPU. A run directory holds ``flags.txt`` (written by the CLI),
``checkpoints/`` (resumed automatically), TensorBoard ``logs/`` and ``export/``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfface import heads, losses, models
from tfface.data import pipeline, rec_source
from tfface.export import export_saved_model
from tfface.training.optimizers import make_optimizer
from tfface.training.schedules import learning_rate_for_epoch, read_schedule_file
from tfface.training.strategy import get_strategy, is_chief
from tfface.training.warm_start import load_backbone_weights


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; the CLI fills it from flags (facenet's names)."""

    data_dir: str
    run_dir: str
    model_def: str = "mobilefacenet"
    image_size: tuple[int, int] = (112, 112)
    embedding_size: int = 512
    standardization: str = "fixed_image_standardization"
    head: str = "arcface"
    head_kwargs: dict = dataclasses.field(default_factory=dict)
    partial_fc: bool = False  # shard the head's centres over the replicas (heads.PartialFC)
    sample_rate: float = 1.0  # Partial FC: share of each shard's centres used per step
    batch_size: int = 90
    epoch_size: int = 1000
    max_nrof_epochs: int = 10
    optimizer: str = "ADAM"
    learning_rate: float = 0.01
    learning_rate_schedule_file: str = ""
    weight_decay: float = 0.0
    center_loss_factor: float = 0.0
    center_loss_alfa: float = 0.95
    prelogits_norm_loss_factor: float = 0.0
    prelogits_norm_p: float = 1.0
    keep_probability: float = 1.0
    augment: pipeline.Augment = dataclasses.field(default_factory=pipeline.Augment)
    seed: int = 666
    strategy: str = "default"
    mixed_precision: bool = False
    log_every_n_steps: int = 10
    model_name: str = ""
    log_dir: str = ""  # TensorBoard logs; default <run_dir>/logs
    evaluate: Callable[[keras.Model, int], dict] | None = None  # called after each epoch
    pretrained_model: str = ""  # a fresh run starts its backbone from this run/export (warm_start)


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    export_dir: str | None
    epochs_run: int
    steps: int
    final_loss: float
    final_accuracy: float
    metrics: dict


METRICS = ("loss", "xent", "reg_loss", "accuracy", "center_loss")


def _kernel_l2(variables) -> tf.Tensor:
    """``sum(w**2) / 2`` over kernels only (no BN, PReLU or biases), like slim's l2_regularizer."""
    kernels = [v for v in variables if "kernel" in v.path]
    return tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels]) if kernels else tf.constant(0.0)


class Trainer:
    """Builds embedder + head under a strategy and trains them with a custom loop."""

    def __init__(self, config: TrainConfig):
        self.config = config
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        self.strategy = get_strategy(config.strategy)
        self.chief = is_chief(self.strategy)
        logging.info(
            "strategy %s: %d replica(s) in sync", type(self.strategy).__name__, self.strategy.num_replicas_in_sync
        )
        self.info, self.shards = rec_source.data_source(config.data_dir)  # TFRecord shards or a .rec dir
        self.num_classes = int(self.info["num_classes"])
        self.schedule = read_schedule_file(config.learning_rate_schedule_file) if config.learning_rate_schedule_file else None
        backbone_kwargs = {"keep_probability": config.keep_probability} if config.keep_probability < 1.0 else {}
        with self.strategy.scope():
            self.embedder = models.build_embedder(
                config.model_def, config.image_size, config.embedding_size, config.standardization, **backbone_kwargs
            )
            self.head = heads.get_head(config.head, self.num_classes, **config.head_kwargs)
            if config.partial_fc:
                self.head = heads.PartialFC(self.head, config.sample_rate, self.strategy, seed=config.seed)
            self.head.build([(None, config.embedding_size), (None,)])
            self.center_loss = (
                losses.CenterLoss(self.num_classes, config.embedding_size, config.center_loss_alfa)
                if config.center_loss_factor > 0 else None
            )
            optimizer = make_optimizer(config.optimizer, self._rate(0) or config.learning_rate)
            if config.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self._variables)
            if config.partial_fc:
                self.head.build_optimizer(self.optimizer)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(
            embedder=self.embedder, head=self.head, optimizer=self.optimizer, epoch=self.epoch,
            **({"center_loss": self.center_loss} if self.center_loss is not None else {}),
        )
        checkpoint_dir = os.path.join(config.run_dir, "checkpoints")
        if not self.chief:  # other workers write to a scratch dir (MultiWorker needs everyone to save)
            checkpoint_dir = os.path.join(config.run_dir, f"checkpoints-worker-{self.strategy.cluster_resolver.task_id}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, checkpoint_dir, max_to_keep=3)

    @property
    def _variables(self) -> list:
        return self.embedder.trainable_variables + self.head.trainable_variables

    def _rate(self, epoch: int) -> float | None:
        if self.schedule is None:
            return self.config.learning_rate
        return learning_rate_for_epoch(self.schedule, epoch)

    def _make_step(self) -> Callable:
        config, strategy = self.config, self.strategy
        replicas = strategy.num_replicas_in_sync

        def step(images, labels):
            shard = self.head.local_variables() if config.partial_fc else []  # this replica's centres
            with tf.GradientTape() as tape:
                embeddings = self.embedder(images, training=True)
                if config.partial_fc:
                    per_example, predictions = self.head.loss_and_predictions(embeddings, labels)
                else:
                    per_example = heads.head_loss(labels, self.head([embeddings, labels], training=True))
                xent = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
                reg = config.weight_decay * (_kernel_l2(self._variables) / replicas + sum(map(tf.nn.l2_loss, shard)))
                center = tf.constant(0.0)
                if self.center_loss is not None:
                    center = self.center_loss(embeddings, labels, training=True)
                extra = config.center_loss_factor * center
                if config.prelogits_norm_loss_factor > 0:
                    norm = losses.prelogits_norm_loss(embeddings, config.prelogits_norm_p)
                    extra += config.prelogits_norm_loss_factor * norm
                loss = xent + reg + extra / replicas  # extra terms are per-replica batch means
                scaled = self.optimizer.scale_loss(loss) if config.mixed_precision else loss
            grads = tape.gradient(scaled, self._variables + shard)
            self.optimizer.apply_gradients(zip(grads, self._variables))
            if config.partial_fc:
                self.head.apply_local_gradients(grads[len(self._variables):], self.optimizer.learning_rate)
            else:  # accuracy without the margin: label -1 means "no target" for every head
                predictions = heads.head_predictions(self.head([embeddings, -tf.ones_like(labels)], training=False))
            correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))
            return tf.stack([loss, xent, reg, correct / config.batch_size, center / replicas])

        @tf.function
        def train_steps(iterator, count):
            totals = tf.zeros([len(METRICS)])
            for _ in tf.range(count):
                values = strategy.run(step, args=next(iterator))
                totals += strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)
            return totals / tf.cast(count, tf.float32)

        return train_steps

    def train(self) -> TrainResult:
        """Runs (or resumes) the training; exports the embedder at the end."""
        config = self.config
        restored = self.manager.restore_or_initialize()
        if not restored and config.pretrained_model:
            logging.info("backbone weights from %s", load_backbone_weights(self.embedder, config.pretrained_model))
        start_epoch = int(self.epoch.numpy())
        if restored:
            logging.info("resumed from %s at epoch %d", restored, start_epoch)
        dataset = pipeline.distribute(
            self.strategy, self.shards, config.batch_size, config.image_size,
            augment=config.augment, seed=config.seed + start_epoch, training=True,
        )
        iterator = iter(dataset)
        train_steps = self._make_step()
        log_dir = config.log_dir or os.path.join(config.run_dir, "logs")
        writer = tf.summary.create_file_writer(log_dir) if self.chief else tf.summary.create_noop_writer()
        metrics: dict = {}
        averages = np.zeros(len(METRICS))
        epoch = start_epoch
        for epoch in range(start_epoch, config.max_nrof_epochs):
            rate = self._rate(epoch)
            if rate is None:
                logging.info("learning-rate schedule says stop at epoch %d", epoch)
                break
            self.optimizer.learning_rate.assign(rate)
            averages = self._run_epoch(train_steps, iterator, epoch, rate, writer)
            self.epoch.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)
            if config.evaluate is not None:
                metrics = config.evaluate(self.embedder, epoch)
                with writer.as_default(step=(epoch + 1) * config.epoch_size):
                    for name, value in metrics.items():
                        tf.summary.scalar(f"eval/{name}", value)
        else:
            epoch = config.max_nrof_epochs
        export_dir = None
        if self.chief:
            export_base = os.path.join(config.run_dir, "export")
            export_dir = export_saved_model(self.embedder, export_base, config.model_name or config.model_def,
                                            alignment=tfrecord.alignment_settings(self.info))
            logging.info("exported the embedder to %s", export_dir)
        return TrainResult(
            run_dir=config.run_dir,
            export_dir=export_dir,
            epochs_run=epoch - start_epoch,
            steps=int(self.optimizer.iterations.numpy()),
            final_loss=float(averages[0]),
            final_accuracy=float(averages[3]),
            metrics=metrics,
        )

    def _run_epoch(self, train_steps, iterator, epoch: int, rate: float, writer) -> np.ndarray:
        config = self.config
        done, averages = 0, np.zeros(len(METRICS))
        while done < config.epoch_size:
            count = min(config.log_every_n_steps, config.epoch_size - done)
            start = time.time()
            averages = train_steps(iterator, tf.constant(count)).numpy()
            elapsed = time.time() - start
            done += count
            loss, xent, reg, accuracy, center = averages
            logging.info(
                "Epoch: [%d][%d/%d]\tTime %.3f\tLoss %2.3f\tXent %2.3f\tRegLoss %2.3f\tAccuracy %2.3f\tLr %2.5f\tCl %2.3f\t(%.1f img/s)",
                epoch + 1, done, config.epoch_size, elapsed / count, loss, xent, reg, accuracy, rate, center,
                count * config.batch_size / elapsed,
            )
            with writer.as_default(step=epoch * config.epoch_size + done):
                for name, value in zip(METRICS, averages):
                    tf.summary.scalar(f"train/{name}", value)
                tf.summary.scalar("train/learning_rate", rate)
        return averages

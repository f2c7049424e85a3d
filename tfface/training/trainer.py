"""The training loop: one ``tf.function`` step run with ``strategy.run``, for every strategy.

Not ``Model.fit``: Keras 3's ``fit`` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585), while this loop runs the same code on one device, N mirrored
replicas, several workers or a TPU. A run directory holds ``flags.txt`` (written by the CLI),
``checkpoints/`` (resumed automatically), TensorBoard ``logs/`` and ``export/``.

Resuming is exact: checkpoints (every ``checkpoint_every_n_steps``, at epoch ends and on
SIGTERM) hold the weights, optimizer, loss scale, centre and dropout-RNG state and the position
in the input stream, and the stream of epoch ``e`` depends only on ``(seed, e)``, so a killed
run restarted with the same command trains on the batches an uninterrupted run would have.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfface import heads, losses, models
from tfface.data import pipeline, rec_source, tfrecord
from tfface.core.errors import UserError, check_choice
from tfface.export import export_saved_model
from tfface.training.optimizers import make_optimizer
from tfface.training.preemption import StopSignal
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
    moving_average_decay: float = 0.0  # > 0: evaluate and export the exponential moving average of the weights
    center_loss_factor: float = 0.0
    center_loss_alfa: float = 0.95
    prelogits_norm_loss_factor: float = 0.0
    prelogits_norm_p: float = 1.0
    keep_probability: float = 1.0
    augment: pipeline.Augment = dataclasses.field(default_factory=pipeline.Augment)
    seed: int = 666
    strategy: str = "default"
    tpu: str = ""  # TPU address or name for the resolver (strategy "tpu"); "" = the local/default one
    mixed_precision: bool = False  # see precision_policy: bfloat16 on TPUs and bf16 CPUs, else float16
    mixed_precision_dtype: str = ""  # "bfloat16" or "float16" overrides that choice
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 0  # 0: at epoch ends (and on SIGTERM) only
    deterministic: bool = False  # TF op determinism: reruns give bit-identical weights
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
    skipped_steps: int = 0  # mixed precision: steps whose gradients overflowed (not applied)
    interrupted: bool = False  # stopped by SIGTERM after checkpointing; nothing exported


METRICS = ("loss", "xent", "reg_loss", "accuracy", "center_loss")


class NonFiniteLossError(UserError):
    """The loss (or the weights) became NaN or Inf; nothing is checkpointed from that state."""


def precision_policy(mixed_precision: bool, strategy: tf.distribute.Strategy, dtype: str = "") -> str:
    """The Keras dtype policy: ``mixed_<dtype>`` when ``dtype`` is given, else bfloat16 on TPUs
    and on GPU-less hosts whose CPU computes in bfloat16 natively (AVX512_BF16 / AMX), float16
    elsewhere."""
    if not mixed_precision:
        return "float32"
    if dtype:
        check_choice(dtype, ("bfloat16", "float16"), "mixed_precision_dtype")
        return f"mixed_{dtype}"
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if not tf.config.list_physical_devices("GPU") and cpu_has_bfloat16():
        return "mixed_bfloat16"
    return "mixed_float16"


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has bfloat16 arithmetic (x86 ``avx512_bf16`` or ``amx_bf16`` flags)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def epoch_seed(seed: int, epoch: int) -> int:
    """The input stream's seed for ``epoch``: a function of ``(seed, epoch)`` only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _kernel_l2(variables) -> tf.Tensor:
    """``sum(w**2) / 2`` over kernels only (no BN, PReLU or biases), like slim's l2_regularizer."""
    kernels = [v for v in variables if "kernel" in v.path]
    return tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels]) if kernels else tf.constant(0.0)


class Trainer:
    """Builds embedder + head under a strategy and trains them with a custom loop."""

    def __init__(self, config: TrainConfig):
        self.config = config
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)  # weight initialisation and dropout
        self.strategy = get_strategy(config.strategy, config.tpu)
        self.policy = precision_policy(config.mixed_precision, self.strategy, config.mixed_precision_dtype)
        keras.mixed_precision.set_global_policy(self.policy)
        self.chief = is_chief(self.strategy)
        logging.info(
            "strategy %s: %d replica(s) in sync", type(self.strategy).__name__, self.strategy.num_replicas_in_sync
        )
        self.info, self.shards = rec_source.data_source(config.data_dir)  # TFRecord shards or a .rec dir
        self.num_classes = int(self.info["num_classes"])
        self.schedule = read_schedule_file(config.learning_rate_schedule_file) if config.learning_rate_schedule_file else None
        with self.strategy.scope():
            self.embedder = self._build_embedder()
            self.head = self._build_head()
            self.center_loss = (
                losses.CenterLoss(self.num_classes, config.embedding_size, config.center_loss_alfa)
                if config.center_loss_factor > 0 else None
            )
            optimizer = make_optimizer(config.optimizer, self._rate(0) or config.learning_rate, config.moving_average_decay)
            if self.loss_scaling:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self._variables)
            if config.partial_fc:
                self.head.build_optimizer(self.optimizer)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step")  # batches done in `epoch`
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # batches done in all
            self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
            # What else decides the input stream; a resumed run must use the same.
            self.stream = tf.Variable([config.seed, config.batch_size], dtype=tf.int64, trainable=False, name="stream")
        rng_states = [v for v in self._models_variables if "seed_generator" in v.path]
        self.checkpoint = tf.train.Checkpoint(
            embedder=self.embedder, optimizer=self.optimizer, epoch=self.epoch,
            epoch_step=self.epoch_step, step=self.step, skipped_steps=self.skipped_steps, stream=self.stream,
            **({"head": self.head} if self.head is not None else {}),
            **({"rng_states": rng_states} if rng_states else {}),
            **({"center_loss": self.center_loss} if self.center_loss is not None else {}),
        )
        checkpoint_dir = os.path.join(config.run_dir, "checkpoints")
        if not self.chief:  # other workers write to a scratch dir (MultiWorker needs everyone to save)
            checkpoint_dir = os.path.join(config.run_dir, f"checkpoints-worker-{self.strategy.cluster_resolver.task_id}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, checkpoint_dir, max_to_keep=3)

    @property
    def loss_scaling(self) -> bool:
        """float16 needs loss scaling (and may skip overflowing steps); bfloat16 does not."""
        return self.policy == "mixed_float16"

    def _build_embedder(self) -> keras.Model:
        config = self.config
        return models.build_embedder(config.model_def, config.image_size, config.embedding_size, config.standardization,
                                     keep_probability=config.keep_probability)

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within it the trainable weights are their moving averages (``moving_average_decay`` > 0;
        else unchanged); the trained weights are put back on exit."""
        if not self.config.moving_average_decay:
            yield
            return
        trained = [v.numpy() for v in self._variables]
        self.optimizer.finalize_variable_values(self._variables)  # a LossScaleOptimizer passes it on
        try:
            yield
        finally:
            for variable, value in zip(self._variables, trained):
                variable.assign(value)

    def _export_embedder(self) -> keras.Model:
        """The embedder to export: a float32 copy after mixed-precision training (exports compute in
        float32 wherever they are served)."""
        if self.policy == "float32":
            return self.embedder
        keras.mixed_precision.set_global_policy("float32")
        try:
            embedder = self._build_embedder()
        finally:
            keras.mixed_precision.set_global_policy(self.policy)
        embedder.set_weights(self.embedder.get_weights())
        return embedder

    def _build_head(self) -> keras.layers.Layer | None:
        """The classification head (None: the loss needs none, e.g. triplet training)."""
        head = heads.get_head(self.config.head, self.num_classes, **self.config.head_kwargs)
        if self.config.partial_fc:
            head = heads.PartialFC(head, self.config.sample_rate, self.strategy, seed=self.config.seed)
        head.build([(None, self.config.embedding_size), (None,)])
        return head

    @property
    def _variables(self) -> list:
        return self.embedder.trainable_variables + (self.head.trainable_variables if self.head is not None else [])

    @property
    def _models_variables(self) -> list:
        return self.embedder.variables + (self.head.variables if self.head is not None else [])

    def _dataset(self, epoch: int, skip_steps: int) -> tf.distribute.DistributedDataset:
        """Epoch ``epoch``'s input stream (a function of ``(seed, epoch)``), ``skip_steps`` batches in."""
        config = self.config
        return pipeline.distribute(
            self.strategy, self.shards, config.batch_size, config.image_size, skip_steps=skip_steps,
            augment=config.augment, seed=epoch_seed(config.seed, epoch), training=True,
        )

    def _rate(self, epoch: int) -> float | None:
        if self.schedule is None:
            return self.config.learning_rate
        return learning_rate_for_epoch(self.schedule, epoch)

    def _apply(self, loss: tf.Tensor, tape: tf.GradientTape, shard: list = ()) -> tf.Tensor:
        """Applies the gradients of ``loss`` (``shard``: this replica's Partial FC centres, updated
        locally); 1.0 when the loss-scale optimizer skipped the step."""
        with tape:  # the scaling must be recorded too
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaling else loss
        grads = tape.gradient(scaled, self._variables + list(shard))
        skipped = tf.constant(0.0)  # the loss-scale optimizer skips steps whose gradients overflow
        if self.loss_scaling:
            skipped = 1.0 - tf.cast(_all_finite([g for g in grads if g is not None]), tf.float32)
        self.optimizer.apply_gradients(zip(grads, self._variables))
        if shard:
            self.head.apply_local_gradients(grads[len(self._variables):], self.optimizer.learning_rate)
        return skipped

    def _regularization(self, shard: list = ()) -> tf.Tensor:
        """This replica's share of the weight decay (all of it for its own Partial FC centres)."""
        if not self.config.weight_decay:  # nothing to compute or differentiate
            return tf.constant(0.0)
        replicated = _kernel_l2(self._variables) / self.strategy.num_replicas_in_sync
        return self.config.weight_decay * (replicated + sum(map(tf.nn.l2_loss, shard)))

    def _replica_step(self) -> Callable:
        """``step(images, labels)`` on one replica: trains, returns the METRICS + [skipped]."""
        config, replicas = self.config, self.strategy.num_replicas_in_sync

        def step(images, labels):
            shard = self.head.local_variables() if config.partial_fc else []  # this replica's centres
            with tf.GradientTape() as tape:
                embeddings = self.embedder(images, training=True)
                if config.partial_fc:
                    per_example, predictions = self.head.loss_and_predictions(embeddings, labels)
                else:
                    per_example = heads.head_loss(labels, self.head([embeddings, labels], training=True))
                per_example += heads.feature_loss(self.head, embeddings)  # MagFace's regulariser; 0 otherwise
                xent = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
                reg = self._regularization(shard)
                center = tf.constant(0.0)
                if self.center_loss is not None:
                    center = self.center_loss(embeddings, labels, training=True)
                extra = config.center_loss_factor * center
                if config.prelogits_norm_loss_factor > 0:
                    norm = losses.prelogits_norm_loss(embeddings, config.prelogits_norm_p)
                    extra += config.prelogits_norm_loss_factor * norm
                loss = xent + reg + extra / replicas  # extra terms are per-replica batch means
            skipped = self._apply(loss, tape, shard)
            if not config.partial_fc:  # accuracy without the margin: label -1 means "no target" for every head
                predictions = heads.head_predictions(self.head([embeddings, -tf.ones_like(labels)], training=False))
            correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))
            return tf.stack([loss, xent, reg, correct / config.batch_size, center / replicas, skipped])

        return step

    def _make_step(self) -> Callable:
        strategy, step = self.strategy, self._replica_step()

        @tf.function
        def train_steps(iterator, count):
            """Up to ``count`` steps: (metric sums, steps run, steps skipped, all finite).

            Stops right after a step with a non-finite metric (that step is counted in
            ``ran``, not in the sums)."""
            totals, ran, skipped, finite = tf.zeros([len(METRICS)]), tf.constant(0), tf.constant(0.0), tf.constant(True)
            for _ in tf.range(count):
                values = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step, args=next(iterator)), axis=None)
                ran += 1
                finite = _all_finite([values])
                if not finite:
                    break
                totals += values[: len(METRICS)]
                skipped += tf.minimum(values[-1], 1.0)
            return totals, ran, skipped, finite

        return train_steps

    def train(self) -> TrainResult:
        """Runs (or resumes) the training; exports the embedder at the end."""
        config = self.config
        restored = self.manager.restore_or_initialize()
        self._check_stream(restored)
        if not restored and config.pretrained_model:
            logging.info("backbone weights from %s", load_backbone_weights(self.embedder, config.pretrained_model))
        start_epoch, done = int(self.epoch.numpy()), int(self.epoch_step.numpy())
        if restored:
            logging.info("resumed from %s at epoch %d, step %d", restored, start_epoch, int(self.step.numpy()))
        train_steps = self._make_step()
        log_dir = config.log_dir or os.path.join(config.run_dir, "logs")
        writer = tf.summary.create_file_writer(log_dir) if self.chief else tf.summary.create_noop_writer()
        metrics: dict = {}
        averages = np.zeros(len(METRICS))
        epoch, interrupted = start_epoch, False
        with StopSignal() as stop:
            while epoch < config.max_nrof_epochs:
                rate = self._rate(epoch)
                if rate is None:
                    logging.info("learning-rate schedule says stop at epoch %d", epoch)
                    break
                self.optimizer.learning_rate.assign(rate)
                if done < config.epoch_size:
                    averages, interrupted = self._run_epoch(train_steps, epoch, done, rate, writer, stop)
                    if interrupted:
                        break
                epoch, done = epoch + 1, 0
                self.epoch.assign(epoch)
                self.epoch_step.assign(0)
                self._save()
                if config.evaluate is not None:
                    with self.averaged_weights():
                        metrics = config.evaluate(self.embedder, epoch - 1)
                    with writer.as_default(step=int(self.step.numpy())):
                        for name, value in metrics.items():
                            tf.summary.scalar(f"eval/{name}", value)
        export_dir = None
        if self.chief and not interrupted:
            export_base = os.path.join(config.run_dir, "export")
            with self.averaged_weights():
                export_dir = export_saved_model(self._export_embedder(), export_base,
                                                config.model_name or config.model_def,
                                                alignment=tfrecord.alignment_settings(self.info))
            logging.info("exported the embedder to %s", export_dir)
        return TrainResult(
            run_dir=config.run_dir,
            export_dir=export_dir,
            epochs_run=epoch - start_epoch,
            steps=int(self.step.numpy()),
            final_loss=float(averages[0]),
            final_accuracy=float(averages[3]),
            metrics=metrics,
            skipped_steps=int(self.skipped_steps.numpy()),
            interrupted=interrupted,
        )

    def _run_epoch(self, train_steps, epoch: int, done: int, rate: float, writer, stop: StopSignal) -> tuple[np.ndarray, bool]:
        """Trains epoch ``epoch`` from batch ``done`` on; (last averages, stopped by SIGTERM)."""
        config, every = self.config, self.config.checkpoint_every_n_steps
        iterator = iter(self._dataset(epoch, done))
        step, averages = int(self.step.numpy()), np.zeros(len(METRICS))
        while done < config.epoch_size:
            count = min(config.log_every_n_steps, config.epoch_size - done)
            if every:
                count = min(count, every - step % every)
            start = time.time()
            totals, ran, skipped, finite = (t.numpy() for t in train_steps(iterator, tf.constant(count)))
            elapsed = time.time() - start
            if not finite:
                self._diverged(f"non-finite loss at step {step + ran} (epoch {epoch + 1}, batch {done + ran})")
            step, done = step + count, done + count
            self.step.assign(step)
            self.epoch_step.assign(done)
            self.skipped_steps.assign_add(int(skipped))
            averages = totals / count
            loss, xent, reg, accuracy, center = averages
            logging.info(
                "Epoch: [%d][%d/%d]\tTime %.3f\tLoss %2.3f\tXent %2.3f\tRegLoss %2.3f\tAccuracy %2.3f\tLr %2.5f\tCl %2.3f\t(%.1f img/s)%s",
                epoch + 1, done, config.epoch_size, elapsed / count, loss, xent, reg, accuracy, rate, center,
                count * config.batch_size / elapsed, f"\tSkipped {int(skipped)}" if skipped else "",
            )
            with writer.as_default(step=step):
                for name, value in zip(METRICS, averages):
                    tf.summary.scalar(f"train/{name}", value)
                tf.summary.scalar("train/learning_rate", rate)
            if self._stop_requested(stop):
                self._save()
                logging.info("stopped by SIGTERM at epoch %d, step %d; rerun the same command to resume", epoch + 1, step)
                return averages, True
            if every and step % every == 0 and done < config.epoch_size:
                self._save()
        return averages, False

    def _stop_requested(self, stop: StopSignal) -> bool:
        """SIGTERM seen (by any worker: all of them must checkpoint together)."""
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return stop.received
        flag = tf.constant(float(stop.received))
        return bool(self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(lambda: flag), axis=None) > 0)

    def _save(self) -> None:
        """Checkpoints the current state, unless a weight is no longer finite."""
        if not bool(_all_finite(self._models_variables)):
            self._diverged(f"non-finite weights after step {int(self.step.numpy())}")
        path = self.manager.save()
        logging.info("saved checkpoint %s at step %d", path, int(self.step.numpy()))

    def _diverged(self, what: str) -> None:
        last = self.manager.latest_checkpoint
        hint = f"the last good checkpoint is {last}" if last else "no checkpoint was written before"
        raise NonFiniteLossError(
            f"{what}: training diverged, nothing was saved from this state; {hint} "
            "(lower --learning_rate and rerun the same command to resume from it)"
        )

    def _check_stream(self, restored: str | None) -> None:
        saved_seed, saved_batch = (int(v) for v in self.stream.numpy())
        if restored and (saved_seed, saved_batch) != (self.config.seed, self.config.batch_size):
            raise UserError(
                f"--seed={self.config.seed} --batch_size={self.config.batch_size}: the run in {self.config.run_dir} "
                f"was trained with --seed={saved_seed} --batch_size={saved_batch}; resume with those (or use a new --subdir)"
            )


def _all_finite(tensors) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32))) for t in tensors])

"""Partial FC: the class centres of a margin head sharded across the replicas of a strategy.

"Partial FC: Training 10 Million Identities on a Single Machine" (An et al., ICCV 2021
workshops), https://arxiv.org/abs/2010.05222. Replica r of N holds only the centres of its
classes ``[start_r, start_r + C_r)`` (a plain variable on its own device, never mirrored) and
an optimizer for them. Every step it all-gathers the embeddings and labels of the global batch,
keeps its positive centres plus a random sample of its negatives (ratio ``sample_rate``),
computes the margin logits of the wrapped head against them, and the softmax cross-entropy is
normalised across replicas with a cross-replica max and sum. Gradients reach the backbone
through the all-gather; each shard is updated by its own replica only.

Memory per replica: ``D * C / N`` centres plus their optimizer slots, instead of ``D * C``.
"""
from __future__ import annotations

import concurrent.futures
import math

import keras
import numpy as np
import tensorflow as tf

from tfface.core.errors import UserError
from tfface.heads.base import BatchView, NormalizedHead, head_dtype
from tfface.heads.registry import get_head_class, list_heads


def normalized_heads() -> list[str]:
    """Registered heads Partial FC can wrap (the normalised margin heads)."""
    return [name for name in list_heads() if issubclass(get_head_class(name), NormalizedHead)]


def shard_ranges(num_classes: int, num_shards: int) -> list[tuple[int, int]]:
    """``(start, size)`` of each shard: contiguous, sizes differ by at most one, union = all classes."""
    base, extra = divmod(int(num_classes), int(num_shards))
    sizes = [base + (1 if r < extra else 0) for r in range(num_shards)]
    starts = np.cumsum([0] + sizes[:-1])
    return [(int(s), n) for s, n in zip(starts, sizes)]


def num_sampled(shard_size: int, sample_rate: float, global_batch) -> tf.Tensor:
    """Centres a shard uses per step: ``ceil(rate * C_r)``, at least the global batch (room for
    every positive), at most ``C_r``."""
    wanted = tf.maximum(math.ceil(sample_rate * shard_size), tf.cast(global_batch, tf.int32))
    return tf.minimum(wanted, shard_size)


def _outside_strategy_scope(fn):
    """Runs ``fn`` in a worker thread: tf.distribute scopes are thread-local, so the variables
    ``fn`` creates are plain single-device variables even when the caller is in a scope."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def _best_over_replicas(ctx, value: tf.Tensor, payload: tf.Tensor) -> tf.Tensor:
    """Per row, ``payload`` of the replica holding the largest ``value`` (both (B,))."""
    values = tf.reshape(ctx.all_gather(value[None], axis=0), [-1, tf.shape(value)[0]])
    payloads = tf.reshape(ctx.all_gather(payload[None], axis=0), [-1, tf.shape(value)[0]])
    best = tf.argmax(values, axis=0, output_type=tf.int32)
    return tf.gather(tf.transpose(payloads), best, batch_dims=1)


@keras.saving.register_keras_serializable(package="tfface")
class PartialFC(keras.layers.Layer):
    """A normalised margin head whose centres are sharded over the replicas, with sampled negatives.

    Paper: "Partial FC: Training 10 Million Identities on a Single Machine",
    https://arxiv.org/abs/2010.05222.

    Unlike the other heads it returns the per-example softmax cross-entropy, not logits (the full
    logits never exist on one device); :meth:`loss_and_predictions` also gives the predicted
    class, an argmax over the centres sampled this step (all of them at ``sample_rate=1``).
    Call it in replica context (inside ``strategy.run``) or without a strategy; under one
    replica it is the wrapped head with sampling. Labels must lie in ``[0, num_classes)``.

    Shard ``r`` is ``head.shard_{r}`` (D, C_r) on the r-th device of the strategy, with its
    random generator ``sampler_{r}`` and, after :meth:`build_optimizer`, its optimizer
    ``optimizer_{r}``: a checkpoint of the layer saves every shard and restores it to the same
    replica (restart with the same replica count). At ``sample_rate=1`` loss and gradients
    equal the wrapped head's. The wrapped head's moving statistics (AdaFace's norm statistics,
    CurricularFace's t) are replicated weights of ``head.head``, computed over the global batch
    (:class:`~tfface.heads.base.BatchView`); with sub-centres a shard holds ``C_r * K`` columns
    and a sampled class brings all K.

    Args:
        head: the margin head whose ``target_logit`` and ``scale`` are used (a
            :class:`~tfface.heads.NormalizedHead`: normface, cosface, arcface, combined, adaface,
            magface, curricularface, subcenter_arcface); it is never built, so its full kernel is
            never allocated.
        sample_rate: rho in (0, 1], the share of each shard's centres used per step (positives
            always, plus random negatives; at least the global batch size of centres).
        strategy: the tf.distribute strategy (one host); default the current one.
        seed: seeds the centres' initialisation and the negative sampling.

    Example:
        >>> with strategy.scope():
        ...     head = PartialFC(CosFace(1_000_000), sample_rate=0.1)
        ...     head.build([(None, 512), (None,)])
        ...     head.build_optimizer(keras.optimizers.SGD(0.1, momentum=0.9))
        >>> # in strategy.run: loss, predictions = head.loss_and_predictions(embeddings, labels)
        >>> #   grads = tape.gradient(loss, ... + head.local_variables())
        >>> #   head.apply_local_gradients(shard_grads, learning_rate)
    """

    def __init__(
        self,
        head: NormalizedHead,
        sample_rate: float = 1.0,
        strategy: tf.distribute.Strategy | None = None,
        seed: int = 0,
        **kwargs,
    ):
        if isinstance(head, dict):
            head = keras.saving.deserialize_keras_object(head)
        kwargs["dtype"] = head_dtype(kwargs.get("dtype"))
        super().__init__(**kwargs)
        if not isinstance(head, NormalizedHead):
            raise ValueError(
                f"head: Partial FC needs a normalised margin head ({', '.join(normalized_heads())}), "
                f"got {type(head).__name__}"
            )
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"sample_rate: expected a value in (0, 1], got {sample_rate}")
        self.strategy = strategy or tf.distribute.get_strategy()
        self.devices = self._devices(self.strategy)
        self.head = head
        self.num_classes = head.num_classes
        self.sample_rate = float(sample_rate)
        self.seed = int(seed)
        self.ranges = shard_ranges(self.num_classes, len(self.devices))
        if min(size for _, size in self.ranges) < 1:
            raise ValueError(f"num_classes={self.num_classes} is smaller than the {len(self.devices)} replicas")

    @staticmethod
    def _devices(strategy) -> list[str | None]:
        if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
            return [None]  # no strategy: one shard, on the default device
        devices = list(strategy.extended.worker_devices)
        if len(devices) != strategy.num_replicas_in_sync:
            raise ValueError(
                f"PartialFC supports one-host strategies (one replica per local device); "
                f"{type(strategy).__name__} has {strategy.num_replicas_in_sync} replicas on {len(devices)} local devices"
            )
        return devices

    @property
    def num_shards(self) -> int:
        return len(self.devices)

    def shard(self, r: int) -> tf.Variable:
        """Centres of replica ``r``'s classes, (D, C_r * K)."""
        return getattr(self, f"shard_{r}")

    @property
    def centres_per_class(self) -> int:
        """K, the wrapped head's columns per class (sub-centres; 1 for the others)."""
        return self.head.centres_per_class

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        k = self.centres_per_class
        limit = math.sqrt(6.0 / (dim + self.num_classes * k))  # Glorot uniform of the whole (D, C K) matrix

        def create():
            for r, ((_, size), device) in enumerate(zip(self.ranges, self.devices)):
                with tf.device(device):
                    init = tf.random.stateless_uniform([dim, size * k], [self.seed, r], -limit, limit, self.compute_dtype)
                    setattr(self, f"shard_{r}", tf.Variable(init, name=f"partial_fc_shard_{r}"))
                    setattr(self, f"sampler_{r}", tf.random.Generator.from_seed(self.seed * 7919 + r))

        _outside_strategy_scope(create)
        if hasattr(self.head, "build_state"):  # replicated moving statistics, in the strategy's scope
            self.head.build_state()
        super().build(input_shape)

    def build_optimizer(self, optimizer: keras.optimizers.Optimizer) -> None:
        """One copy of ``optimizer`` (same class and config, own slots) per shard, on its device."""
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError("PartialFC does not support a LossScaleOptimizer (mixed_float16)")

        def create():
            for r, device in enumerate(self.devices):
                with tf.device(device):
                    copy = optimizer.__class__.from_config(optimizer.get_config())
                    copy.build([self.shard(r)])
                    setattr(self, f"optimizer_{r}", copy)

        _outside_strategy_scope(create)

    def get_centres(self) -> np.ndarray:
        """All class centres (D, C * K), the shards concatenated in class order."""
        return np.concatenate([self.shard(r).numpy() for r in range(self.num_shards)], axis=1)

    def set_centres(self, centres) -> None:
        """Loads (D, C * K) centres into the shards (e.g. from an unsharded head's ``kernel``)."""
        centres, k = np.asarray(centres), self.centres_per_class
        for r, (start, size) in enumerate(self.ranges):
            self.shard(r).assign(centres[:, start * k:(start + size) * k])

    def _replica(self) -> tuple[tf.distribute.ReplicaContext, int]:
        ctx = tf.distribute.get_replica_context()
        if ctx is None:
            raise RuntimeError("PartialFC must be called in replica context (inside strategy.run)")
        r = tf.get_static_value(ctx.replica_id_in_sync_group)
        if r is None:
            raise RuntimeError("PartialFC needs a static replica id (one-host strategies, not TPUStrategy)")
        return ctx, int(r)

    def local_variables(self) -> list[tf.Variable]:
        """This replica's shard, as a one-element list (for ``tape.gradient``)."""
        return [self.shard(self._replica()[1])]

    def apply_local_gradients(self, gradients: list, learning_rate) -> None:
        """Updates this replica's shard with its own optimizer (see :meth:`build_optimizer`)."""
        r = self._replica()[1]
        optimizer = getattr(self, f"optimizer_{r}")
        optimizer.update_step(tf.convert_to_tensor(gradients[0]), self.shard(r), tf.cast(learning_rate, tf.float32))
        optimizer.iterations.assign_add(1)

    def _sample(self, r: int, labels: tf.Tensor):
        """Centres used this step (D, n K), their n class indices in the shard, remapped labels."""
        shard, size = self.shard(r), self.ranges[r][1]
        if self.sample_rate >= 1.0:
            return shard, tf.range(size), labels
        k = num_sampled(size, self.sample_rate, tf.shape(labels)[0])
        positives = tf.boolean_mask(labels, labels >= 0)
        is_positive = tf.scatter_nd(positives[:, None], tf.ones_like(positives), [size]) > 0
        scores = tf.where(is_positive, 2.0, getattr(self, f"sampler_{r}").uniform([size]))
        index = tf.math.top_k(scores, k, sorted=False).indices
        column = tf.scatter_nd(index[:, None], tf.range(k), [size])
        labels = tf.where(labels >= 0, tf.gather(column, tf.maximum(labels, 0)), -1)
        per_class = self.centres_per_class
        columns = tf.reshape(index[:, None] * per_class + tf.range(per_class)[None, :], [-1])
        return tf.gather(shard, columns, axis=1), index, labels

    def loss_and_predictions(self, embeddings: tf.Tensor, labels: tf.Tensor, training: bool = True
                             ) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example cross-entropy (B,) and predicted class (B,) for this replica's examples;
        ``training`` updates the wrapped head's moving statistics."""
        ctx, r = self._replica()
        start, size = self.ranges[r]
        x = tf.cast(embeddings, self.compute_dtype)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        counts = ctx.all_gather(tf.shape(x)[:1], axis=0)
        first = tf.reduce_sum(counts[:r])
        xs, ys = ctx.all_gather(x, axis=0), ctx.all_gather(labels, axis=0)
        local = tf.where((ys >= start) & (ys < start + size), ys - start, -1)
        centres, index, local = self._sample(r, local)
        cos, cos_t, theta_t, mask = self.head.cosines(xs, local, kernel=centres)
        logits = self.head.margin_logits(cos, cos_t, theta_t, mask, xs, training, BatchView(rows_global=True))
        row_max = tf.stop_gradient(tf.reduce_max(ctx.all_gather(tf.reduce_max(logits, axis=1)[None], axis=0), axis=0))
        shifted = logits - row_max[:, None]
        sum_exp = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.exp(shifted), axis=1))
        target = ctx.all_reduce(
            tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.where(mask, shifted, tf.zeros_like(shifted)), axis=1)
        )
        loss = tf.math.log(sum_exp) - target
        best = tf.argmax(cos, axis=1, output_type=tf.int32)
        predictions = _best_over_replicas(ctx, tf.reduce_max(cos, axis=1), tf.gather(index, best) + start)
        own = tf.range(first, first + tf.shape(x)[0])
        return tf.gather(loss, own), tf.gather(predictions, own)

    def call(self, inputs, training=None):
        embeddings, labels = inputs
        return self.loss_and_predictions(embeddings, labels, training is not False)[0]

    def feature_loss(self, embeddings: tf.Tensor) -> tf.Tensor | None:
        """The wrapped head's per-example term on this replica's embeddings (see :func:`~tfface.heads.feature_loss`)."""
        return self.head.feature_loss(embeddings)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {
            **super().get_config(),
            "head": keras.saving.serialize_keras_object(self.head),
            "sample_rate": self.sample_rate,
            "seed": self.seed,
        }


def check_partial_fc(head: str, sample_rate: float, strategy: str, mixed_precision: bool) -> None:
    """Raises :class:`~tfface.core.errors.UserError` naming the flag when ``--partial_fc`` cannot run."""
    if not issubclass(get_head_class(head), NormalizedHead):
        raise UserError(f"--head: --partial_fc needs one of {', '.join(normalized_heads())}, got {head!r}")
    if not 0.0 < sample_rate <= 1.0:
        raise UserError(f"--sample_rate: expected a value in (0, 1], got {sample_rate}")
    if strategy not in ("default", "mirrored"):
        raise UserError(f"--strategy: --partial_fc runs on one host (default or mirrored), got {strategy!r}")
    if mixed_precision:
        raise UserError("--mixed_precision: not supported with --partial_fc")

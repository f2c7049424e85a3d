"""Picks the tf.distribute strategy by name; one training loop runs under all of them."""
from __future__ import annotations

import tensorflow as tf

from tfface.core.errors import UserError, check_choice

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (tests the multi-replica path on CPU).

    Must run before TensorFlow initialises its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def get_strategy(name: str = "default", tpu: str = "") -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, else all logical CPUs),
    ``multi_worker`` (reads ``TF_CONFIG``), ``tpu`` (``tpu``: the TPU's name or
    ``grpc://host:port`` address; empty on a TPU VM or where the environment names it)."""
    check_choice(name, STRATEGIES, "strategy")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tpu_resolver(tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def tpu_resolver(tpu: str = "") -> tf.distribute.cluster_resolver.TPUClusterResolver:
    """The cluster resolver of TPU ``tpu``; a :class:`UserError` naming it when none is found."""
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
    except (ValueError, RuntimeError, OSError) as err:  # OSError: an unknown TPU name (metadata lookup)
        raise UserError(f"--tpu: no TPU found for {tpu or '(default)'!r}: {err}") from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, logs and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)

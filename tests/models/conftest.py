"""tests/models: split the CPU into 2 logical devices for the MirroredStrategy tests.

Logical devices can only be configured before TensorFlow initialises its runtime, so this runs
at collection time. Other folders are unaffected: ops still default to ``/CPU:0`` and a
``MirroredStrategy()`` without explicit devices still uses one CPU.
"""
from __future__ import annotations

import warnings

import tensorflow as tf

NUM_LOGICAL_CPUS = 2


def _split_cpu(n: int) -> None:
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as err:  # runtime already initialised by an earlier test module
        warnings.warn(f"could not split the CPU into {n} logical devices: {err}", stacklevel=1)


_split_cpu(NUM_LOGICAL_CPUS)

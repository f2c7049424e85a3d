"""Real training runs for the tests: subprocesses of the CLI and their checkpoints as arrays."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def tiny_args(data_dir, base_dir, subdir, *extra) -> list[str]:
    """A small MobileFaceNet + ArcFace run: 32 px, batch 8, one-step log chunks."""
    return [
        f"--data_dir={data_dir}", f"--models_base_dir={base_dir}", f"--subdir={subdir}", "--image_size=32",
        "--embedding_size=16", "--batch_size=8", "--log_every_n_steps=1", "--head_kwargs=scale=16,margin=0.2", *extra,
    ]


def start(module: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run(module: str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env or ENV, capture_output=True, text=True, timeout=600)


def wait_for(path: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Blocks until ``path`` exists (polling every 20 ms); fails if ``proc`` ends first."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def checkpoint_arrays(checkpoint_dir: str, prefix: str | None = None) -> dict[str, np.ndarray]:
    """Every tensor of the latest (or the given) checkpoint, by key (the save counter excluded)."""
    reader = tf.train.load_checkpoint(prefix or tf.train.latest_checkpoint(checkpoint_dir))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH" and not key.startswith("save_counter")
    }


def state_value(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A checkpointed training-state variable (``step``, ``epoch``, ``epoch_step``...)."""
    return arrays[f"{name}/.ATTRIBUTES/VARIABLE_VALUE"]


def max_weight_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over the float tensors (weights, optimizer slots, statistics)."""
    assert a.keys() == b.keys(), set(a) ^ set(b)
    keys = [k for k in a if np.issubdtype(a[k].dtype, np.floating)]
    assert keys
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in keys)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def scalars(log_dir: str, tag: str) -> list[float]:
    """The values of TensorBoard scalar ``tag`` in ``log_dir``, in step order."""
    points = []
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    points.append((event.step, float(tf.make_ndarray(value.tensor))))
    return [v for _, v in sorted(points)]

"""Partial FC against the mirrored margin head: per-replica memory and step time at growing C.

Each configuration runs in its own process on 2 logical CPU devices (MirroredStrategy): a
512 -> 512 dense "backbone" on random inputs, a CosFace head over C classes (D = 512), SGD with
momentum, one full training step (forward, backward through the all-gather, both updates).
Measured per configuration: the bytes of the head's variables and optimizer slots held by one
replica (read from the real variables), the median step time and the process's peak RSS (both
replicas live in the one process). Prints a markdown table and writes
``bench/results/partial_fc_<UTC time>.json``; the largest C that fits in this machine's RAM is
extrapolated from the peak RSS (linear in C) of the two largest runs of each head.

    python bench/partial_fc.py                                # 10k, 100k, 300k classes (~10 min)
    python bench/partial_fc.py --classes 10000,1000000 --heads partial_fc_0.1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
HEADS = ("mirrored", "partial_fc_1.0", "partial_fc_0.1")
DIM, REPLICAS = 512, 2


def _replica_bytes(variables, device: str) -> int:
    """Bytes of the (components of the) variables placed on ``device``."""
    import keras
    import tensorflow as tf

    total = 0
    for v in variables:
        v = v.value if isinstance(v, keras.Variable) else v
        parts = v.values if isinstance(v, tf.distribute.DistributedValues) else [v]
        total += sum(p.shape.num_elements() * p.dtype.size for p in parts if p.device.endswith(device))
    return total


def run_one(head_kind: str, num_classes: int, batch_size: int, steps: int) -> dict:
    """One configuration in this process; returns its measurements."""
    import keras
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
    from tfface import heads

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
    sharded = head_kind != "mirrored"
    with strategy.scope():
        backbone = keras.Sequential([keras.Input((DIM,)), keras.layers.Dense(DIM)])
        head = heads.CosFace(num_classes)
        if sharded:
            head = heads.PartialFC(head, sample_rate=float(head_kind.rsplit("_", 1)[1]))
        head.build([(None, DIM), (None,)])
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        variables = backbone.trainable_variables + head.trainable_variables
        optimizer.build(variables)
        if sharded:
            head.build_optimizer(optimizer)

    def step(x, y):
        shard = head.local_variables() if sharded else []
        with tf.GradientTape() as tape:
            embeddings = backbone(x, training=True)
            if sharded:
                per_example = head.loss_and_predictions(embeddings, y)[0]
            else:
                per_example = heads.head_loss(y, head([embeddings, y]))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
        grads = tape.gradient(loss, variables + shard)
        optimizer.apply_gradients(zip(grads, variables))
        if sharded:
            head.apply_local_gradients(grads[len(variables):], optimizer.learning_rate)
        return loss

    train_step = tf.function(lambda inputs: strategy.reduce("sum", strategy.run(step, args=inputs), axis=None))
    rng = np.random.default_rng(0)

    def batch():
        x = rng.normal(size=(batch_size, DIM)).astype(np.float32)
        y = rng.integers(0, num_classes, batch_size).astype(np.int32)
        dataset = tf.data.Dataset.from_tensors((x, y)).unbatch().batch(batch_size)
        return next(iter(strategy.experimental_distribute_dataset(dataset)))

    inputs = [batch() for _ in range(steps + 1)]
    float(train_step(inputs[0]))  # trace + first step
    times = []
    for item in inputs[1:]:
        start = time.perf_counter()
        float(train_step(item))
        times.append(time.perf_counter() - start)
    if sharded:
        head_variables = [head.shard(r) for r in range(REPLICAS)]
        head_variables += [v for r in range(REPLICAS) for v in getattr(head, f"optimizer_{r}").variables if v.shape.rank]
    else:
        head_variables = head.trainable_variables + [v for v in optimizer.variables if len(v.shape) == 2 and v.shape[1] == num_classes]
    per_replica = max(_replica_bytes(head_variables, f"CPU:{r}") for r in range(REPLICAS))
    return {
        "head": head_kind,
        "num_classes": num_classes,
        "embedding_size": DIM,
        "replicas": REPLICAS,
        "global_batch": batch_size,
        "head_bytes_per_replica": per_replica,
        "step_seconds": float(np.median(times)),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _spawn(head_kind: str, num_classes: int, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", head_kind, "--classes", str(num_classes),
           "--batch_size", str(args.batch_size), "--steps", str(args.steps)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"{head_kind} C={num_classes}: failed ({proc.stderr.strip().splitlines()[-1:]})", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def largest_classes(results: list[dict], head_kind: str, ram_bytes: int) -> int | None:
    """C at which the peak RSS, linear through the two largest runs of ``head_kind``, reaches ``ram_bytes``."""
    runs = sorted((r["num_classes"], r["peak_rss_bytes"]) for r in results if r["head"] == head_kind)
    if len(runs) < 2:
        return None
    (c0, m0), (c1, m1) = runs[-2:]
    slope = (m1 - m0) / (c1 - c0)
    return int(c1 + (ram_bytes - m1) / slope) if slope > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="10000,100000,300000", help="comma-separated class counts")
    parser.add_argument("--heads", default=",".join(HEADS), help=f"comma-separated subset of {HEADS}")
    parser.add_argument("--batch_size", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, int(args.classes), args.batch_size, args.steps)))
        return
    results = []
    for num_classes in (int(c) for c in args.classes.split(",")):
        for head_kind in args.heads.split(","):
            result = _spawn(head_kind, num_classes, args)
            if result:
                results.append(result)
                print(f"{head_kind} C={num_classes}: {result['step_seconds']:.3f} s/step", flush=True)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mirrored = {r["num_classes"]: r for r in results if r["head"] == "mirrored"}
    lines = [
        f"D = {DIM}, {REPLICAS} logical CPU replicas, global batch {args.batch_size}, SGD momentum "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "",
        "| head | C | head + slots per replica (MB) | step (s) | step vs mirrored | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        peer = mirrored.get(r["num_classes"])
        ratio = f"{r['step_seconds'] / peer['step_seconds']:.2f}x" if peer else "-"
        lines.append(
            f"| {r['head']} | {r['num_classes']:,} | {r['head_bytes_per_replica'] / 2**20:,.1f} | "
            f"{r['step_seconds']:.3f} | {ratio} | {r['peak_rss_bytes'] / 2**20:,.0f} |"
        )
    largest = {h: largest_classes(results, h, ram) for h in args.heads.split(",")}
    lines += ["", f"Largest C in {ram / 2**30:.0f} GB RAM (linear in the peak RSS of the two largest runs):"]
    lines += [f"- {h}: {c:,}" if c else f"- {h}: not enough runs" for h, c in largest.items()]
    print("\n".join(lines))
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"partial_fc_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(f"{path}.tmp", "w") as f:
        json.dump({"results": results, "largest_classes": largest, "ram_bytes": ram, "table": lines}, f, indent=1)
    os.replace(f"{path}.tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Runs the Partial FC cases on N logical CPUs and writes every array to an .npz for the tests.

A fresh process per N: logical devices can only be configured before TensorFlow starts (and
pytest's process has started it), and collectives of 2 and 4 replicas cannot share a process.
Usage: ``python partial_fc_worker.py N OUT.npz``.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

NUM_REPLICAS = int(sys.argv[1])
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * NUM_REPLICAS
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfface import heads  # noqa: E402

IN_DIM, DIM = 12, 8
HEADS = {
    "cosface": {"scale": 16.0, "margin": 0.35}, "arcface": {"scale": 16.0, "margin": 0.5},
    # the adaptive margins (issue 29): statistics that move fast, so that the warm-up step shows
    "adaface": {"scale": 16.0, "margin": 0.4, "t_alpha": 0.5},
    "magface": {"scale": 16.0, "l_a": 0.5, "u_a": 4.0, "lambda_g": 3.0},
    "curricularface": {"scale": 16.0, "margin": 0.5, "momentum": 0.5},
    "subcenter_arcface": {"scale": 16.0, "margin": 0.5, "centres_per_class": 3},
}
STATEFUL = ("adaface", "curricularface")
OUT: dict[str, np.ndarray] = {}


# One strategy per process: two strategies on the same devices would reuse collective keys.
STRATEGY = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(NUM_REPLICAS)])


def strategy(n: int) -> tf.distribute.MirroredStrategy:
    assert n == NUM_REPLICAS, (n, NUM_REPLICAS)
    return STRATEGY


def split(s, *arrays):
    """Distributes equal contiguous slices of each array over the replicas."""
    n = s.num_replicas_in_sync

    def part(ctx):
        r = ctx.replica_id_in_sync_group
        return tuple(a[r * len(a) // n:(r + 1) * len(a) // n] for a in arrays)

    return s.experimental_distribute_values_from_function(part)


def local(s, value, axis=0):
    return np.concatenate([t.numpy() for t in s.experimental_local_results(value)], axis=axis)


def backbone(seed: int, hidden: int = 0, in_dim: int = IN_DIM) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(hidden, activation="relu")] if hidden else []
    model = keras.Sequential([keras.Input((in_dim,)), *layers, keras.layers.Dense(DIM)])
    return model


def equality_case(name: str, n: int) -> None:
    """Loss and gradients (input, backbone, every centre) of the sharded and the plain head at rho=1,
    at the second training step (the first moves the heads' statistics), and those statistics."""
    num_classes, batch = 11, 8
    rng = np.random.default_rng(n)
    x = rng.normal(size=(batch, IN_DIM)).astype("float32")
    warm_x = (rng.normal(size=(batch, IN_DIM)) * 2.0).astype("float32")
    y = np.array([0, 10, 3, 3, 7, 5, 10, 1], "int32")
    model = backbone(0)
    plain = heads.get_head(name, num_classes, **HEADS[name])
    plain.build([(None, DIM), (None,)])
    plain([model(warm_x), y], training=True)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        embeddings = model(xt)
        per_example = heads.head_loss(y, plain([embeddings, y], training=True)) + heads.feature_loss(plain, embeddings)
        loss = tf.reduce_mean(per_example)
    g_x, g_model, g_kernel = tape.gradient(loss, [xt, model.trainable_variables, plain.kernel])
    key = f"{name}_{n}"
    OUT.update({f"{key}_x": x, f"{key}_y": y, f"{key}_embeddings": embeddings.numpy(), f"{key}_kernel": plain.kernel.numpy()})
    OUT.update({f"{key}_ref_loss": per_example.numpy(), f"{key}_ref_gx": g_x.numpy(), f"{key}_ref_gkernel": g_kernel.numpy()})
    OUT.update({f"{key}_ref_gmodel{i}": g.numpy() for i, g in enumerate(g_model)})

    s = strategy(n)
    with s.scope():
        head = heads.PartialFC(heads.get_head(name, num_classes, **HEADS[name]), sample_rate=1.0)
        head.build([(None, DIM), (None,)])
    head.set_centres(plain.kernel.numpy())
    OUT[f"{key}_devices_ok"] = np.array(
        [head.shard(r).device.endswith(f"CPU:{r}") and not isinstance(head.shard(r), tf.distribute.DistributedValues)
         for r in range(n)]
    )
    OUT[f"{key}_no_weights"] = np.array([not head.trainable_weights, not head.head.built])

    @tf.function
    def step(inputs):
        def fn(xb, yb):
            ctx = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                tape.watch(xb)
                embeddings = model(xb)
                per_example, predictions = head.loss_and_predictions(embeddings, yb)
                per_example += heads.feature_loss(head, embeddings)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch)
            g_x, g_model, g_shard = tape.gradient(loss, [xb, model.trainable_variables, head.local_variables()])
            return per_example, predictions, g_x, ctx.all_reduce("sum", g_model), g_shard[0]

        return s.run(fn, args=inputs)

    step(split(s, warm_x, y))
    per_example, predictions, g_x, g_model, g_shard = step(split(s, x, y))
    OUT.update({f"{key}_loss": local(s, per_example), f"{key}_gx": local(s, g_x), f"{key}_gkernel": local(s, g_shard, 1)})
    OUT.update({f"{key}_gmodel{i}": s.experimental_local_results(g)[0].numpy() for i, g in enumerate(g_model)})
    OUT[f"{key}_predictions"] = local(s, predictions)
    OUT[f"{key}_ref_predictions"] = heads.head_predictions(plain([embeddings, -np.ones_like(y)])).numpy()
    OUT[f"{key}_centres"] = head.get_centres()
    OUT[f"{key}_state"] = np.array([v.numpy() for v in head.head.non_trainable_weights], np.float32)
    OUT[f"{key}_ref_state"] = np.array([v.numpy() for v in plain.non_trainable_weights], np.float32)


def mirrored_case(name: str, n: int) -> None:
    """No Partial FC: the replicated head on each replica's rows, two training steps; per-example
    loss and moving statistics equal one device's on the whole batch (statistics of the global batch)."""
    num_classes, batch = 11, 8
    rng = np.random.default_rng(10 + n)
    batches = [(rng.normal(size=(batch, DIM)) * (1 + 3 * rng.random((batch, 1)))).astype("float32") for _ in range(2)]
    y = np.array([0, 10, 3, 3, 7, 5, 10, 1], "int32")
    plain = heads.get_head(name, num_classes, **HEADS[name])
    plain.build([(None, DIM), (None,)])
    s = strategy(n)
    with s.scope():
        replicated = heads.get_head(name, num_classes, **HEADS[name])
        replicated.build([(None, DIM), (None,)])
    replicated.kernel.assign(plain.kernel)

    @tf.function
    def step(inputs):
        return s.run(lambda xb, yb: heads.head_loss(yb, replicated([xb, yb], training=True)), args=inputs)

    key = f"mirrored_{name}_{n}"
    for i, x in enumerate(batches):
        OUT[f"{key}_ref_loss{i}"] = heads.head_loss(y, plain([x, y], training=True)).numpy()
        OUT[f"{key}_loss{i}"] = local(s, step(split(s, x, y)))
    OUT[f"{key}_state"] = np.array([v.numpy() for v in replicated.non_trainable_weights], np.float32)
    OUT[f"{key}_ref_state"] = np.array([v.numpy() for v in plain.non_trainable_weights], np.float32)


def sampling_case() -> None:
    """rho=0.1 over 403 classes on 4 replicas: sampled columns, remapped labels and losses of 3 steps."""
    num_classes, n, batch = 403, 4, 8
    s = strategy(n)
    with s.scope():
        head = heads.PartialFC(heads.CosFace(num_classes, scale=16.0), sample_rate=0.1, seed=5)
        head.build([(None, DIM), (None,)])
    rng = np.random.default_rng(7)

    @tf.function
    def step(inputs):
        def fn(xb, yb):
            ctx = tf.distribute.get_replica_context()
            r = tf.get_static_value(ctx.replica_id_in_sync_group)
            start, size = head.ranges[r]
            ys = ctx.all_gather(yb, axis=0)
            labels = tf.where((ys >= start) & (ys < start + size), ys - start, -1)
            sampler = getattr(head, f"sampler_{r}")
            state = tf.identity(sampler.state)
            _, index, remapped = head._sample(r, labels)
            sampler.reset(state)  # the loss below draws the same sample
            per_example, _ = head.loss_and_predictions(xb, yb)
            return index, labels, remapped, per_example

        return s.run(fn, args=inputs)

    for t in range(3):
        x = rng.normal(size=(batch, DIM)).astype("float32")
        y = np.concatenate([rng.integers(0, 101, 5), rng.integers(101, num_classes, 3)]).astype("int32")
        index, labels, remapped, per_example = step(split(s, x, y))
        OUT.update({f"sample{t}_x": x, f"sample{t}_y": y, f"sample{t}_loss": local(s, per_example)})
        for r in range(n):
            OUT[f"sample{t}_index{r}"] = s.experimental_local_results(index)[r].numpy()
            OUT[f"sample{t}_labels{r}"] = s.experimental_local_results(labels)[r].numpy()
            OUT[f"sample{t}_remapped{r}"] = s.experimental_local_results(remapped)[r].numpy()
    OUT["sample_centres"] = head.get_centres()
    OUT["sample_ranges"] = np.array(head.ranges)


def make_trainer(s, seed: int, num_classes: int, rate: float, hidden: int, in_dim: int, lr: float = 0.01):
    """MLP + Partial FC CosFace + Adam (its copies on the shards); ``train(x, y, batch)`` runs the
    distributed steps over the examples in order (in one ``tf.function`` loop)."""
    with s.scope():
        model = backbone(seed, hidden, in_dim)
        head = heads.PartialFC(heads.CosFace(num_classes, scale=16.0, margin=0.2), sample_rate=rate, seed=seed)
        head.build([(None, DIM), (None,)])
        optimizer = keras.optimizers.Adam(lr)
        optimizer.build(model.trainable_variables)
        head.build_optimizer(optimizer)

    def step(xb, yb, global_batch):
        with tf.GradientTape() as tape:
            per_example, _ = head.loss_and_predictions(model(xb, training=True), yb)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables + head.local_variables())
        optimizer.apply_gradients(zip(grads[:-1], model.trainable_variables))
        head.apply_local_gradients(grads[-1:], optimizer.learning_rate)
        return loss

    @tf.function
    def loop(iterator, count, global_batch):
        losses = tf.TensorArray(tf.float32, size=count)
        for i in tf.range(count):
            xb, yb = next(iterator)
            losses = losses.write(i, s.reduce("sum", s.run(step, args=(xb, yb, global_batch)), axis=None))
        return losses.stack()

    def train(x, y, batch: int) -> np.ndarray:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
        return loop(iter(s.experimental_distribute_dataset(dataset)), len(x) // batch, batch).numpy()

    return model, head, optimizer, train


def separable(num_classes: int, in_dim: int, count: int, seed: int):
    means = np.random.default_rng(123).normal(size=(num_classes, in_dim)) * 2.0
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count)
    return (means[labels] + rng.normal(size=(count, in_dim)) * 0.5).astype("float32"), labels.astype("int32")


def learning_case() -> None:
    """rho=0.1 on 2 replicas, 200 classes: accuracy with all centres on held-out data, before/after."""
    num_classes, in_dim, batch, steps = 200, 32, 8, 400
    s = strategy(2)
    model, head, _, train = make_trainer(s, 1, num_classes, 0.1, 64, in_dim)
    x_test, y_test = separable(num_classes, in_dim, 2000, 99)

    def accuracy() -> float:
        e = model(x_test).numpy()
        w = head.get_centres()
        cos = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
        return float(np.mean(np.argmax(cos, axis=1) == y_test))

    before = accuracy()
    losses = train(*separable(num_classes, in_dim, steps * batch, 1), batch)
    OUT["learn_accuracy"] = np.array([before, accuracy()])
    OUT["learn_loss"] = np.array([np.mean(losses[:50]), np.mean(losses[-50:])])
    OUT["learn_sampled"] = np.array([int(heads.partial_fc.num_sampled(num_classes // 2, 0.1, batch))])


def resume_case() -> None:
    """3 steps, checkpoint, 3 steps; a fresh model restored from the checkpoint redoes the last 3."""
    num_classes, batch = 41, 4
    x, y = separable(num_classes, IN_DIM, 6 * batch, 3)
    s = strategy(2)
    path = os.path.join(os.path.dirname(os.path.abspath(sys.argv[2])), "ckpt")
    states = []
    for seed, restore in ((1, False), (2, True)):
        model, head, optimizer, train = make_trainer(s, seed, num_classes, 0.5, 0, IN_DIM)
        checkpoint = tf.train.Checkpoint(model=model, head=head, optimizer=optimizer)
        if restore:
            checkpoint.read(saved).assert_consumed()
            OUT["resume_restored_centres"] = head.get_centres()
        else:
            train(x[:3 * batch], y[:3 * batch], batch)
            saved = checkpoint.write(path)
            OUT["resume_saved_centres"] = head.get_centres()
            OUT["resume_keys"] = np.array([name for name, _ in tf.train.list_variables(saved)])
        train(x[3 * batch:], y[3 * batch:], batch)
        states.append([head.get_centres()] + [v.numpy() for v in model.trainable_variables])
        states[-1] += [v.numpy() for r in range(2) for v in getattr(head, f"optimizer_{r}").variables if "momentum" in v.name]
    for i, (a, b) in enumerate(zip(*states)):
        OUT[f"resume_a{i}"], OUT[f"resume_b{i}"] = a, b


def main() -> None:
    for name in HEADS:
        equality_case(name, NUM_REPLICAS)
    for name in STATEFUL:
        mirrored_case(name, NUM_REPLICAS)
    if NUM_REPLICAS == 4:
        sampling_case()
    else:
        learning_case()
        resume_case()
    np.savez(sys.argv[2], **OUT)
    print("OK")


if __name__ == "__main__":
    main()

"""Losses against float64 NumPy references: forward and gradients."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.heads.conftest import record
from tests.heads.reference import numeric_grad
from tests.losses import reference as ref
from tfface import losses


def tf_value_and_grad(fn, x):
    xt = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        value = fn(xt)
    return value.numpy().astype(np.float64), tape.gradient(value, xt).numpy().astype(np.float64)


def embeddings(n=10, d=4, seed=0, unit=True):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) if unit else x


LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4])  # class 3 and 4: no positive


# ---------------------------------------------------------------- center loss


def test_center_loss_value_gradient_and_facenet_update():
    rng = np.random.default_rng(0)
    num_classes, dim, alpha = 4, 3, 0.9
    layer = losses.CenterLoss(num_classes, dim, alpha=alpha)
    centers = np.zeros((num_classes, dim))
    for step in range(3):
        x = rng.normal(size=(5, dim))
        labels = np.array([0, 3, 3, 1, 3])  # duplicates add up, as facenet's scatter_sub
        want = np.mean((x - centers[labels]) ** 2)
        want_grad = 2 * (x - centers[labels]) / x.size
        got, grad = tf_value_and_grad(lambda t: layer(t, tf.constant(labels), training=True), x)
        record("center_loss/forward", abs(got - want))
        record("center_loss/gradient", np.abs(grad - want_grad).max())
        assert got == pytest.approx(want, rel=1e-5)
        np.testing.assert_allclose(grad, want_grad, atol=1e-6)
        old = centers.copy()
        for xi, yi in zip(x, labels):
            centers[yi] -= (1 - alpha) * (old[yi] - xi)
        np.testing.assert_allclose(layer.centers.numpy(), centers, atol=1e-6)
    before = layer.centers.numpy().copy()
    layer(tf.constant(x, tf.float32), tf.constant(labels))  # not training: no update
    np.testing.assert_array_equal(layer.centers.numpy(), before)


def test_center_loss_checkpoint_round_trip(tmp_path):
    layer = losses.CenterLoss(3, 2)
    layer(tf.ones((2, 2)), tf.constant([0, 2]), training=True)
    prefix = tf.train.Checkpoint(center=layer).save(os.path.join(tmp_path, "c"))
    fresh = losses.CenterLoss(3, 2)
    tf.train.Checkpoint(center=fresh).restore(prefix).assert_existing_objects_matched()
    np.testing.assert_array_equal(fresh.centers.numpy(), layer.centers.numpy())


# ---------------------------------------------------------------- triplets


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_semihard_matches_reference(squared, seed):
    x = embeddings(seed=seed)
    got, grad = tf_value_and_grad(lambda t: losses.triplet_semihard_loss(LABELS, t, margin=0.3, squared=squared), x)
    want = ref.semihard(LABELS, x, 0.3, squared)
    want_grad = numeric_grad(lambda a: ref.semihard(LABELS, a, 0.3, squared), x)
    record("triplet_semihard/forward", abs(got - want))
    record("triplet_semihard/gradient", np.abs(grad - want_grad).max())
    assert want > 0
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(grad, want_grad, atol=2e-4)


@pytest.mark.parametrize("squared,soft", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_batch_hard_matches_reference(squared, soft, seed):
    x = embeddings(seed=seed)
    got, grad = tf_value_and_grad(lambda t: losses.triplet_batch_hard_loss(LABELS, t, 0.3, squared, soft), x)
    want = ref.batch_hard(LABELS, x, 0.3, squared, soft)
    want_grad = numeric_grad(lambda a: ref.batch_hard(LABELS, a, 0.3, squared, soft), x)
    record("triplet_batch_hard/forward", abs(got - want))
    record("triplet_batch_hard/gradient", np.abs(grad - want_grad).max())
    assert want > 0
    assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(grad, want_grad, atol=2e-4)


def test_triplet_losses_without_usable_pairs_are_zero_and_finite():
    x = embeddings(n=3)
    for labels in ([0, 1, 2], [1, 1, 1]):
        for fn in (losses.triplet_semihard_loss, losses.triplet_batch_hard_loss):
            got, grad = tf_value_and_grad(lambda t: fn(np.array(labels), t), x)
            assert got == 0.0 and np.all(np.isfinite(grad))
    # identical embeddings: zero distances, finite gradients (plain euclidean distance)
    same = np.ones((4, 3))
    got, grad = tf_value_and_grad(lambda t: losses.triplet_batch_hard_loss(np.array([0, 0, 1, 1]), t, 0.2), same)
    assert got == pytest.approx(0.2) and np.all(np.isfinite(grad))


def test_offline_triplet_loss_matches_facenet_formula():
    rng = np.random.default_rng(5)
    a, p, n = (rng.normal(size=(6, 4)) for _ in range(3))
    want = np.mean(np.maximum(np.sum((a - p) ** 2, 1) - np.sum((a - n) ** 2, 1) + 0.2, 0))
    got = losses.triplet_loss(a, p, n, 0.2).numpy()
    record("triplet_loss/forward", abs(got - want))
    assert got == pytest.approx(want, rel=1e-5)


def test_select_triplets_follows_facenet_rule():
    per_class = [3, 1, 4, 2]
    x = embeddings(n=sum(per_class), seed=3)
    alpha = 0.5
    triplets, num_pairs = losses.select_triplets(x, per_class, len(per_class), alpha, rng=np.random.default_rng(1))
    assert num_pairs == sum(k * (k - 1) // 2 for k in per_class)
    cls = np.repeat(np.arange(len(per_class)), per_class)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    expected_pairs = set()
    for a in range(len(x)):
        for p in range(a + 1, len(x)):
            if cls[a] == cls[p] and np.any((cls != cls[a]) & (d2[a] - d2[a, p] < alpha)):
                expected_pairs.add((a, p))
    assert {(int(a), int(p)) for a, p, _ in triplets} == expected_pairs
    assert len(triplets) == len(expected_pairs) > 0
    for a, p, n in triplets:
        assert cls[a] == cls[p] != cls[n] and d2[a, n] - d2[a, p] < alpha


# ---------------------------------------------------------------- prelogits


@pytest.mark.parametrize("p", [1.0, 2.0, 1.5])
def test_prelogits_norm_matches_reference(p):
    x = np.random.default_rng(0).normal(size=(5, 7))
    x[0, 0] = 0.0
    eps = 1e-4
    got, grad = tf_value_and_grad(lambda t: losses.prelogits_norm_loss(t, p=p, eps=eps), x)
    norms = np.sum((np.abs(x) + eps) ** p, axis=1) ** (1 / p)
    want = norms.mean()
    want_grad = np.sign(x) * (np.abs(x) + eps) ** (p - 1) * norms[:, None] ** (1 - p) / len(x)
    record("prelogits_norm/forward", abs(got - want))
    record("prelogits_norm/gradient", np.abs(grad - want_grad).max())
    assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(grad, want_grad, atol=1e-6)


def test_prelogits_histogram_and_summary(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 20)) * 4
    got = losses.prelogits_histogram(x, hist_max=5.0, bins=100).numpy()
    want = np.histogram(np.minimum(np.abs(x), 5.0), bins=100, range=(0.0, 5.0))[0]
    np.testing.assert_array_equal(got, want)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert losses.prelogits_histogram_summary(x, step=3, hist_max=5.0, bins=100)
    writer.flush()
    (event_file,) = [os.path.join(tmp_path, n) for n in os.listdir(tmp_path) if n.startswith("events.out")]
    values = [v for e in tf.compat.v1.train.summary_iterator(event_file) for v in e.summary.value]
    (value,) = values
    assert value.tag == "prelogits_hist" and value.metadata.plugin_data.plugin_name == "histograms"
    buckets = tf.make_ndarray(value.tensor)
    assert buckets.shape == (100, 3)
    np.testing.assert_array_equal(buckets[:, 2], want)
    np.testing.assert_allclose(buckets[[0, -1], :2], [[0.0, 0.05], [4.95, 5.0]], atol=1e-6)


# ---------------------------------------------------------------- SeqFace


def test_mask_and_agent_ids():
    labels, seq = np.array([3, 1, 0, 0]), np.array([-1, 2, -1, 0])
    np.testing.assert_array_equal(losses.mask_sequence_labels(labels, seq).numpy(), [3, -1, 0, -1])
    np.testing.assert_array_equal(losses.sequence_agent_ids(labels, seq, 5).numpy(), [3, 7, 0, 5])


@pytest.mark.parametrize("heads", [None, 3])
def test_lsr_loss_matches_reference(heads):
    rng = np.random.default_rng(0)
    shape = (6, 5) if heads is None else (6, heads, 5)
    logits = rng.normal(size=shape) * 3
    labels = np.array([0, 4, 2, 0, 3, 1])
    seq = np.array([-1, -1, 0, 1, 1, -1])
    want = ref.lsr(labels, logits, seq)
    got, grad = tf_value_and_grad(lambda t: tf.reduce_sum(losses.lsr_loss(labels, t, seq)), logits)
    per_example = losses.lsr_loss(labels, tf.constant(logits, tf.float32), seq).numpy()
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    target = np.zeros_like(p)
    for i in range(6):
        target[i] = 1.0 / 5 if seq[i] >= 0 else np.eye(5)[labels[i]]
    want_grad = p - target
    record("lsr/forward", np.abs(per_example - want).max())
    record("lsr/gradient", np.abs(grad - want_grad).max())
    np.testing.assert_allclose(per_example, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, atol=1e-6)
    if heads is None:  # labelled rows are the plain cross-entropy
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.constant(logits, tf.float32)).numpy()
        np.testing.assert_allclose(per_example[seq < 0], ce[seq < 0], rtol=1e-6)


def dsa_problem(seed=0):
    rng = np.random.default_rng(seed)
    num_classes, num_sequences, dim = 3, 3, 4
    x = rng.normal(size=(7, dim))
    labels = np.array([0, 2, 1, 0, 0, 0, 2])
    seq = np.array([-1, -1, -1, 0, 0, 2, 1])
    return num_classes, num_sequences, dim, x, labels, seq


def test_dsa_loss_matches_reference_and_updates_agents():
    num_classes, num_sequences, dim, x, labels, seq = dsa_problem()
    layer = losses.DSALoss(num_classes, num_sequences, dim, lambda_=0.3, alpha=1.5, beta=2.0, agent_rate=0.5)
    agents = layer.agents.numpy().astype(np.float64)
    own = losses.sequence_agent_ids(labels, seq, num_classes).numpy()
    considered = list(range(num_classes + num_sequences))
    fn = lambda a: ref.dsa(a, agents, own, num_classes, 0.3, 1.5, 2.0, considered)  # noqa: E731
    got, grad = tf_value_and_grad(lambda t: layer(t, labels, seq, training=True), x)
    want, want_grad = fn(x), numeric_grad(fn, x)
    record("dsa/forward", abs(got - want))
    record("dsa/gradient", np.abs(grad - want_grad).max())
    assert want > 0
    assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(grad, want_grad, atol=1e-5)
    new = agents.copy()
    for j in range(len(agents)):
        members = x[own == j]
        new[j] -= 0.5 * np.sum(agents[j] - members, axis=0) / (1 + len(members))
    np.testing.assert_allclose(layer.agents.numpy(), new, atol=1e-6)


def test_dsa_never_pushes_two_sequence_agents_apart():
    num_classes, num_sequences, dim, x, labels, seq = dsa_problem(1)
    layer = losses.DSALoss(num_classes, num_sequences, dim, lambda_=0.0, alpha=1.0, beta=100.0)
    agents = layer.agents.numpy()
    frame = x[seq >= 0][:1]
    got = layer(frame, labels[seq >= 0][:1], seq[seq >= 0][:1]).numpy()
    own = num_classes + seq[seq >= 0][0]
    d_own = np.sum((frame[0] - agents[own]) ** 2) / 4
    # only the num_classes identity agents push a frame: each hinge is active with beta=100
    want = sum(d_own - np.sum((frame[0] - agents[j]) ** 2) / 4 + 100.0 for j in range(num_classes)) / len(agents)
    assert got == pytest.approx(want, rel=1e-5)


def test_dsa_random_agent_subset_is_one_of_the_subsets():
    from itertools import combinations

    num_classes, num_sequences, dim, x, labels, seq = dsa_problem(2)
    layer = losses.DSALoss(num_classes, num_sequences, dim, beta=1.0, num_negative_agents=3)
    agents = layer.agents.numpy().astype(np.float64)
    own = losses.sequence_agent_ids(labels, seq, num_classes).numpy()
    candidates = [ref.dsa(x, agents, own, num_classes, 0.5, 1.0, 1.0, list(s)) for s in combinations(range(6), 3)]
    for _ in range(3):
        got = layer(tf.constant(x, tf.float32), labels, seq).numpy()
        assert np.min(np.abs(np.array(candidates) - got)) < 1e-5


def test_dsa_warm_up_and_agent_subsets_follow_the_iteration():
    num_classes, num_sequences, dim, x, labels, seq = dsa_problem(3)
    kwargs = dict(lambda_=0.4, beta=1.0, num_negative_agents=3, center_iter=1, diff_iter=2, seed=4)
    layer = losses.DSALoss(num_classes, num_sequences, dim, **kwargs)
    x = tf.constant(x, tf.float32)
    for k in range(4):  # the seed's warm-up: pull from call 2 on, push from call 3 on
        pull, push = (t.numpy() for t in layer.terms(x, labels, seq))
        got = layer(x, labels, seq, training=True).numpy()
        assert push > 0 and got == pytest.approx(0.4 * (k >= 1) * pull + 0.6 * (k >= 2) * push, rel=1e-6, abs=1e-7)
    assert int(layer.iteration.numpy()) == 4
    twin = losses.DSALoss.from_config(layer.get_config())  # same seed: the same subset at each iteration
    twin.agents.assign(layer.agents)
    pushes = set()
    for k in range(6):
        twin.iteration.assign(k)
        layer.iteration.assign(k)
        push = layer.terms(x, labels, seq)[1].numpy()
        assert twin.terms(x, labels, seq)[1].numpy() == push
        pushes.add(float(push))
    assert len(pushes) > 1  # with fixed agents, the subset changes with the iteration


def test_distributed_updates_sum_over_replicas():
    """MirroredStrategy on 2 logical CPUs: counters +1 per step, centre and agent updates summed over replicas."""
    script = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfface import heads, losses
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    head = heads.SphereFace(3)
    head.build([(None, 4), (None,)])
    center = losses.CenterLoss(3, 4, alpha=0.5)
    dsa = losses.DSALoss(3, 2, 4, agent_rate=0.5)
x = np.random.RandomState(0).randn(4, 4).astype("float32")
seq = np.array([-1, 0, -1, 1], "int32")
agents = dsa.agents.numpy().astype("float64")
y = np.array([0, 1, 1, 2], "int32")
ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
@tf.function
def step(batch):
    def fn(xb, yb):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        sb = tf.gather(tf.constant(seq), 2 * replica + tf.range(2))  # this replica's 2 examples
        return center(xb, yb, training=True) + tf.reduce_sum(head([xb, yb], training=True)) * 0 + dsa(xb, yb, sb, training=True)
    return strategy.run(fn, args=batch)
for _ in range(2):
    for b in ds:
        step(b)
want = np.zeros((3, 4))
for _ in range(2):
    old = want.copy()
    for xi, yi in zip(x, y):
        want[yi] -= 0.5 * (old[yi] - xi)
assert int(head.iteration.numpy()) == 2, head.iteration.numpy()
np.testing.assert_allclose(center.centers.numpy(), want, atol=1e-5)
assert int(dsa.iteration.numpy()) == 2, dsa.iteration.numpy()
own = np.where(seq >= 0, 3 + seq, y)
for _ in range(2):
    old = agents.copy()
    for part in (slice(0, 2), slice(2, 4)):  # per replica, then summed
        for j in np.unique(own[part]):
            members = x[part][own[part] == j]
            agents[j] -= 0.5 * np.sum(old[j] - members, axis=0) / (1 + len(members))
np.testing.assert_allclose(dsa.agents.numpy(), agents, atol=1e-5)
print("OK")
"""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]

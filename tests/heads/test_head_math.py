"""Every head against its float64 NumPy reference: forward and gradients, with edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.heads import reference as ref
from tests.heads.conftest import record
from tfface import heads

B, D, C = 4, 5, 6
LABELS = np.array([0, C - 1, 2, -1])

CASES = {
    "softmax": ({}, None),
    "normface": ({"scale": 30.0}, lambda x, k, y: ref.normface(x, k, y, s=30.0)),
    "cosface": ({"scale": 64.0, "margin": 0.35}, lambda x, k, y: ref.cosface(x, k, y, 64.0, 0.35)),
    "arcface": ({"scale": 64.0, "margin": 0.5}, lambda x, k, y: ref.arcface(x, k, y, 64.0, 0.5)),
    "arcface_easy": ({"scale": 64.0, "margin": 0.5, "easy_margin": True}, lambda x, k, y: ref.arcface(x, k, y, 64.0, 0.5, True)),
    "combined": ({"scale": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}, lambda x, k, y: ref.combined(x, k, y, 64.0, 1.0, 0.3, 0.2)),
    "combined_m1": ({"scale": 32.0, "m1": 0.9, "m2": 0.4, "m3": 0.15}, lambda x, k, y: ref.combined(x, k, y, 32.0, 0.9, 0.4, 0.15)),
}


def make_head(case: str, dtype: str):
    kwargs, _ = CASES[case]
    name = {"arcface_easy": "arcface", "combined_m1": "combined"}.get(case, case)
    return heads.get_head(name, C, dtype=dtype, **kwargs)


def problem(thetas, labels=LABELS, seed=0, norm=1.7):
    """Embeddings at the given angles from their target centre (random where the label is -1)."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(D, C))
    x = rng.normal(size=(len(labels), D)) * norm
    for i, (y, t) in enumerate(zip(labels, thetas)):
        if y >= 0 and t is not None:
            x[i] = ref.at_angle(kernel[:, y], t, rng, norm=norm * (1 + 0.3 * i))
    upstream = rng.normal(size=(len(labels), C))
    return x, kernel, upstream


def tf_forward_and_grads(head, x, kernel, labels, upstream, dtype, training=False, bias=None):
    if not head.built:
        head.build([(None, x.shape[1]), (None,)])
    head.kernel.assign(kernel.astype(dtype))
    if bias is not None:
        head.bias.assign(bias.astype(dtype))
    xt = tf.constant(x, dtype)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = head([xt, tf.constant(labels, tf.int32)], training=training)
        loss = tf.reduce_sum(tf.cast(logits, tf.float64) * upstream)
    gx, gk = tape.gradient(loss, [xt, head.kernel.value])
    return logits.numpy().astype(np.float64), gx.numpy().astype(np.float64), gk.numpy().astype(np.float64)


def reference_and_grads(fn, x, kernel, labels, upstream):
    logits = fn(x, kernel, labels)
    gx = ref.numeric_grad(lambda a: np.sum(fn(a, kernel, labels) * upstream), x)
    gk = ref.numeric_grad(lambda a: np.sum(fn(x, a, labels) * upstream), kernel)
    return logits, gx, gk


def check(name, head_factory, fn, x, kernel, labels, upstream, fwd_tol32=2e-4, grad_tol32=2e-3):
    """Float64 head: tight; float32 head: float32-sized tolerances relative to the logit scale."""
    want, want_gx, want_gk = reference_and_grads(fn, x, kernel, labels, upstream)
    scale = max(1.0, np.abs(want).max())
    for dtype, ftol, gtol in (("float64", 1e-9, 1e-5), ("float32", fwd_tol32, grad_tol32)):
        got, gx, gk = tf_forward_and_grads(head_factory(dtype), x, kernel, labels, upstream, dtype)
        f_err = np.abs(got - want).max()
        g_err = max(np.abs(gx - want_gx).max(), np.abs(gk - want_gk).max())
        gscale = max(1.0, np.abs(want_gx).max(), np.abs(want_gk).max())
        record(f"{name}/{dtype}/forward", f_err)
        record(f"{name}/{dtype}/gradient", g_err)
        assert f_err <= ftol * scale, (name, dtype, "forward", f_err)
        assert g_err <= gtol * gscale, (name, dtype, "gradient", g_err)


@pytest.mark.parametrize("case", [c for c in CASES if c != "softmax"])
@pytest.mark.parametrize(
    "thetas",
    [(0.3, 1.2, 2.8, None), (1e-3, math.pi - 1e-3, 2.7, None), (0.05, 3.0, 1.57, None)],
    ids=["generic", "near_0_and_pi", "fallback_region"],
)
def test_normalized_heads_match_reference(case, thetas):
    x, kernel, upstream = problem(thetas)
    check(case, lambda dtype: make_head(case, dtype), CASES[case][1], x, kernel, LABELS, upstream)


def test_softmax_matches_reference():
    x, kernel, upstream = problem((None,) * B)
    bias = np.random.default_rng(1).normal(size=C)
    want = ref.softmax(x, kernel, bias)
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        got, gx, gk = tf_forward_and_grads(heads.Softmax(C, dtype=dtype), x, kernel, LABELS, upstream, dtype, bias=bias)
        record(f"softmax/{dtype}/forward", np.abs(got - want).max())
        record(f"softmax/{dtype}/gradient", max(np.abs(gx - upstream @ kernel.T).max(), np.abs(gk - x.T @ upstream).max()))
        np.testing.assert_allclose(got, want, atol=tol * 10)
        np.testing.assert_allclose(gx, upstream @ kernel.T, atol=tol * 10)
        np.testing.assert_allclose(gk, x.T @ upstream, atol=tol * 10)


def test_arcface_fallback_branch_is_taken():
    """theta > pi - m: the InsightFace fallback cos - m sin(pi - m), not cos(theta + m)."""
    x, kernel, _ = problem((2.9, 2.9, 2.9, None))
    head = make_head("arcface", "float64")
    head.build([(None, D), (None,)])
    head.kernel.assign(kernel)
    logits = head([tf.constant(x), tf.constant(LABELS)]).numpy()
    cos = ref.cosines(x, kernel)
    for i, y in enumerate(LABELS[:3]):
        assert logits[i, y] == pytest.approx(64.0 * (cos[i, y] - 0.5 * math.sin(math.pi - 0.5)), abs=1e-9)
        assert logits[i, y] != pytest.approx(64.0 * math.cos(2.9 + 0.5), abs=1e-3)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_every_k_interval(m):
    """One embedding in each [k pi/m, (k+1) pi/m] (and next to both ends of [0, pi])."""
    thetas = [(k + 0.5) * math.pi / m for k in range(m)] + [1e-3, math.pi - 1e-3]
    labels = np.array([j % C for j in range(len(thetas))])
    labels[-1] = C - 1
    labels[0] = 0
    x, kernel, upstream = problem(thetas, labels=labels)
    it = 150
    lam = ref.sphereface_lambda(it)

    def factory(dtype):
        head = heads.SphereFace(C, margin=m, dtype=dtype)
        head.build([(None, D), (None,)])
        head.iteration.assign(it)
        return head

    check(f"sphereface_m{m}", factory, lambda a, k, y: ref.sphereface(a, k, y, m, lam), x, kernel, labels, upstream)


@pytest.mark.parametrize("normalize_gradient", [False, True])
def test_sphereface_on_scaled_unit_features(normalize_gradient):
    """feature_scale=32 (SeqFace): A-Softmax of 32 x / ||x||; the reference normalises in NumPy and
    its finite differences carry the gradient through the normalisation."""
    x, kernel, upstream = problem((0.4, 1.3, 2.6, None))
    lam = ref.sphereface_lambda(60)

    def factory(dtype):
        head = heads.SphereFace(C, margin=4, feature_scale=32.0, dtype=dtype)
        head.build([(None, D), (None,)])
        head.iteration.assign(60)
        return head

    def scaled(a, k, y):
        return ref.sphereface(32.0 * a / np.linalg.norm(a, axis=1, keepdims=True), k, y, 4, lam)

    if not normalize_gradient:
        check("sphereface_feature_scale32", factory, scaled, x, kernel, LABELS, upstream)
        return
    # The seed's backward on the scaled features, chained through the normalisation by hand.
    head = heads.SphereFace(C, margin=4, feature_scale=32.0, normalize_gradient=True, dtype="float64")
    head.build([(None, D), (None,)])
    head.iteration.assign(60)
    got, gx, gk = tf_forward_and_grads(head, x, kernel, LABELS, upstream, "float64")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = x / norms
    want_gz, want_k = ref.sphereface_caffe_grads(32.0 * u, kernel, LABELS, upstream, 4, lam)
    want_gx = 32.0 * (want_gz - np.sum(want_gz * u, axis=1, keepdims=True) * u) / norms
    np.testing.assert_allclose(got, scaled(x, kernel, LABELS), atol=1e-9)
    np.testing.assert_allclose(gx, want_gx, atol=1e-7)
    np.testing.assert_allclose(gk, want_k, atol=1e-7)


def test_sphereface_rejects_a_negative_feature_scale():
    with pytest.raises(ValueError, match="feature_scale"):
        heads.SphereFace(C, feature_scale=-1.0)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_sphereface_psi_equals_caffe_polynomial_form(m):
    head = heads.SphereFace(C, margin=m, dtype="float64")
    thetas = np.linspace(1e-4, math.pi - 1e-4, 997)
    got = head.psi(tf.constant(thetas)).numpy()
    want = np.array([ref.sphereface_caffe_psi(math.cos(t), m) for t in thetas])
    paper = np.array([ref.sphereface_psi(t, m) for t in thetas])
    record(f"sphereface_m{m}/psi_vs_caffe_polynomial", np.abs(got - want).max())
    np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_allclose(got, paper, atol=1e-9)
    assert np.all(np.diff(got) < 0)  # psi decreases monotonically on [0, pi]


@pytest.mark.parametrize("m", [2, 4])
def test_sphereface_normalized_gradient_matches_caffe_backward(m):
    labels = np.array([0, C - 1, 3])
    x, kernel, upstream = problem((0.4, 1.3, 2.6), labels=labels)
    it = 40
    lam = ref.sphereface_lambda(it)
    for dtype, tol in (("float64", 1e-7), ("float32", 2e-4)):
        head = heads.SphereFace(C, margin=m, normalize_gradient=True, dtype=dtype)
        head.build([(None, D), (None,)])
        head.iteration.assign(it)
        got, gx, gk = tf_forward_and_grads(head, x, kernel, labels, upstream, dtype)
        want_x, want_k = ref.sphereface_caffe_grads(x, kernel, labels, upstream, m, lam)
        np.testing.assert_allclose(got, ref.sphereface(x, kernel, labels, m, lam), atol=tol * 10)
        err = max(np.abs(gx - want_x).max(), np.abs(gk - want_k).max())
        record(f"sphereface_m{m}_normalized_grad/{dtype}/gradient", err)
        assert err < tol * max(1.0, np.abs(want_x).max())


def test_sphereface_lambda_schedule_and_counter():
    head = heads.SphereFace(C)
    x = tf.random.normal((2, D))
    y = tf.constant([0, 1])
    head([x, y])  # inference: no increment
    assert int(head.iteration.numpy()) == 0
    assert float(head.current_lambda()) == pytest.approx(1000.0)
    for it in range(1, 4):
        head([x, y], training=True)
        assert int(head.iteration.numpy()) == it
        assert float(head.current_lambda()) == pytest.approx(ref.sphereface_lambda(it), rel=1e-6)
    head.iteration.assign(100000)
    assert float(head.current_lambda()) == pytest.approx(5.0)


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "normface", "sphereface", "softmax"])
def test_batch_of_one_and_no_target_label(name):
    """Batch of 1 works; label -1 gives the plain logits (no margin) on that row."""
    head = heads.get_head(name, C, dtype="float64")
    x = np.random.default_rng(3).normal(size=(1, D))
    with_label = head([tf.constant(x), tf.constant([C - 1])]).numpy()
    no_label = head([tf.constant(x), tf.constant([-1])]).numpy()
    assert with_label.shape == (1, C)
    np.testing.assert_allclose(with_label[0, : C - 1], no_label[0, : C - 1], atol=1e-12)
    if name in ("arcface", "cosface", "combined", "sphereface"):
        assert with_label[0, C - 1] < no_label[0, C - 1]  # the margin lowers the target logit


@pytest.mark.parametrize("normalize_chunks", [True, False])
def test_multihead_matches_per_chunk_reference(normalize_chunks):
    n, dim = 2, 6
    rng = np.random.default_rng(4)
    x = rng.normal(size=(B, dim))
    upstream = rng.normal(size=(B, n, C))
    head = heads.MultiHead(C, head_name="arcface", num_heads=n, normalize_chunks=normalize_chunks, margin=0.4, dtype="float64")
    head.build([(None, dim), (None,)])
    kernels = [rng.normal(size=(dim // n, C)) for _ in range(n)]
    for h, k in zip(head.heads, kernels):
        h.kernel.assign(k)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = head([xt, tf.constant(LABELS)])
        loss = tf.reduce_sum(logits * upstream)
    gx = tape.gradient(loss, xt).numpy()

    def fn(a):
        whole = ref.unit(a, 1) if not normalize_chunks else a
        parts = np.split(whole, n, axis=1)
        return np.stack(
            [ref.arcface(p, k, LABELS, 64.0, 0.4, normalize_input=normalize_chunks) for p, k in zip(parts, kernels)], axis=1
        )

    want = fn(x)
    want_gx = ref.numeric_grad(lambda a: np.sum(fn(a) * upstream), x)
    assert logits.shape == (B, n, C)
    key = "multihead_arcface" + ("" if normalize_chunks else "_seed_exact")
    record(f"{key}/float64/forward", np.abs(logits.numpy() - want).max())
    record(f"{key}/float64/gradient", np.abs(gx - want_gx).max())
    np.testing.assert_allclose(logits.numpy(), want, atol=1e-9)
    np.testing.assert_allclose(gx, want_gx, atol=1e-5 * max(1, np.abs(want_gx).max()))
    # loss = sum of the N cross-entropies
    per_head = [tf.nn.sparse_softmax_cross_entropy_with_logits(np.maximum(LABELS, 0), logits[:, i]) for i in range(n)]
    np.testing.assert_allclose(heads.head_loss(np.maximum(LABELS, 0), logits).numpy(), tf.add_n(per_head).numpy(), rtol=1e-6)


def test_multihead_rejects_indivisible_embedding():
    with pytest.raises(ValueError, match="divisible"):
        heads.MultiHead(C, num_heads=4)([tf.zeros((2, 6)), tf.constant([0, 1])])

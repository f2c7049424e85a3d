"""AdaFace, MagFace, CurricularFace and sub-center ArcFace against float64 NumPy references of the
papers' equations: logits, loss (cross-entropy + the head's feature term) and its gradients w.r.t.
embeddings and centres, over several training steps that move the heads' statistics."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.heads import reference as ref
from tests.heads.conftest import record
from tfface import heads

B, D, C, STEPS = 6, 5, 6, 4
LABELS = np.array([0, C - 1, 2, 3, 2, 1])


class AdaFaceRef:
    kwargs = {"scale": 64.0, "margin": 0.4, "h": 1.0, "t_alpha": 0.5}  # h = 1: z_hat reaches its clip at +-1
    norms = (2.0, 60.0)

    def __init__(self):
        self.mean, self.std = 20.0, 100.0

    def step(self, x, kernel, labels):
        """Moves the statistics; returns (logits_fn(x, kernel), feature term fn) with them frozen."""
        z_hat, self.mean, self.std = ref.adaface_statistics(x, self.mean, self.std, alpha=0.5, h=1.0)
        self.clipped = getattr(self, "clipped", 0) + int(np.sum(np.abs(z_hat) == 1.0))
        return lambda a, k: ref.adaface(a, k, labels, z_hat, 64.0, 0.4), None

    def state(self, head):
        return [(float(head.batch_mean.numpy()), self.mean), (float(head.batch_std.numpy()), self.std)]


class MagFaceRef:
    kwargs = {"scale": 64.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0}
    norms = (5.0, 130.0)  # both clip bounds

    def step(self, x, kernel, labels):
        return lambda a, k: ref.magface(a, k, labels), ref.magface_regulariser

    def state(self, head):
        return []


class MagFaceHardRef(MagFaceRef):
    kwargs = {**MagFaceRef.kwargs, "easy_margin": False}

    def step(self, x, kernel, labels):
        return lambda a, k: ref.magface(a, k, labels, easy_margin=False), ref.magface_regulariser


class CurricularRef:
    kwargs = {"scale": 64.0, "margin": 0.5, "momentum": 0.3}
    norms = (1.0, 3.0)

    def __init__(self):
        self.t = 0.0

    def step(self, x, kernel, labels):
        self.t = ref.curricular_t(x, kernel, labels, self.t, momentum=0.3)
        t, hard = self.t, ref.curricular_hard(x, kernel, labels)  # no gradient through either
        return lambda a, k: ref.curricularface(a, k, labels, t, hard), None

    def state(self, head):
        return [(float(head.t.numpy()), self.t)]


class SubCenterRef:
    kwargs = {"scale": 64.0, "margin": 0.5, "centres_per_class": 3}
    norms = (1.0, 3.0)

    def step(self, x, kernel, labels):
        return lambda a, k: ref.subcenter_arcface(a, k, labels, 3), None

    def state(self, head):
        return []


CASES = {"adaface": AdaFaceRef, "magface": MagFaceRef, "magface_hard": MagFaceHardRef,
         "curricularface": CurricularRef, "subcenter_arcface": SubCenterRef}


def _batch(rng, norms, kernel, step):
    x = rng.normal(size=(B, D))
    x *= np.linspace(*norms, B)[rng.permutation(B)][:, None] / np.linalg.norm(x, axis=1, keepdims=True)
    # pull some rows towards their centre so that the targets range from easy to hard
    k = kernel.shape[1] // C
    for i in range(0, B, 2):
        w = kernel[:, LABELS[i] * k]
        x[i] += (1.0 + step) * np.linalg.norm(x[i]) * w / np.linalg.norm(w)
    return x


def _relative(got, want) -> float:
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))


def _tf_step(head, x, labels, dtype):
    xt = tf.constant(x, dtype)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = head([xt, tf.constant(labels)], training=True)
        if dtype == "float32":  # what the trainer runs (head_loss computes in float32)
            per_example = heads.head_loss(labels, logits) + heads.feature_loss(head, xt)
        else:
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            if head.feature_loss(xt) is not None:
                per_example += head.feature_loss(xt)
        loss = tf.reduce_mean(per_example)
    gx, gk = tape.gradient(loss, [xt, head.kernel.value])
    return [np.asarray(v, np.float64) for v in (logits, per_example, gx, gk)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_head_matches_reference_over_steps(case):
    ref_class = CASES[case]
    name = "magface" if case.startswith("magface") else case
    worst = {}
    for dtype, tol, grad_tol in (("float64", 1e-9, 1e-6), ("float32", 1e-5, 1e-5)):  # float64 gradients: finite differences
        rng = np.random.default_rng(11)
        k = ref_class.kwargs.get("centres_per_class", 1)
        kernel = rng.normal(size=(D, C * k))
        reference = ref_class()
        head = heads.get_head(name, C, dtype=dtype, **ref_class.kwargs)
        head.build([(None, D), (None,)])
        head.kernel.assign(kernel.astype(dtype))
        for step in range(STEPS):
            x = _batch(rng, ref_class.norms, kernel, step)
            logits_fn, feature_fn = reference.step(x, kernel, LABELS)

            def loss_fn(a, kk):
                value = ref.cross_entropy(logits_fn(a, kk), LABELS)
                return value + (feature_fn(a) if feature_fn is not None else 0.0)

            want = [logits_fn(x, kernel), loss_fn(x, kernel),
                    ref.numeric_grad(lambda a: np.mean(loss_fn(a, kernel)), x),
                    ref.numeric_grad(lambda kk: np.mean(loss_fn(x, kk)), kernel)]
            got = _tf_step(head, x, LABELS, dtype)
            for what, g, w in zip(("logits", "loss", "grad_embeddings", "grad_centres"), got, want):
                error = _relative(g, w)
                worst[f"{dtype}/{what}"] = max(worst.get(f"{dtype}/{what}", 0.0), error)
                assert error <= (grad_tol if what.startswith("grad") else tol), (case, dtype, step, what, error)
            for got_state, want_state in reference.state(head):
                error = abs(got_state - want_state) / abs(want_state)
                worst[f"{dtype}/state"] = max(worst.get(f"{dtype}/state", 0.0), error)
                assert error <= tol, (case, dtype, step, "state", got_state, want_state)
        if case == "adaface":
            assert reference.clipped > 0  # the clip of z_hat was exercised
    for key, value in worst.items():
        record(f"{case}/{key}", value)


@pytest.mark.parametrize("name", ["adaface", "curricularface"])
def test_evaluation_calls_leave_the_statistics(name):
    head = heads.get_head(name, C)
    x, y = tf.random.normal((4, D)), tf.constant([0, 1, 2, 3])
    head([x, y])
    before = [v.numpy() for v in head.non_trainable_weights]
    head([x, y], training=False)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, head.non_trainable_weights))
    head([x, y], training=True)
    assert not all(np.array_equal(a, v.numpy()) for a, v in zip(before, head.non_trainable_weights))


def test_label_minus_one_rows_get_no_margin_and_no_hard_weighting():
    x = tf.constant(np.random.default_rng(2).normal(size=(3, D)) * 20.0, tf.float64)
    for name in ("adaface", "magface", "curricularface", "subcenter_arcface"):
        head = heads.get_head(name, C, dtype="float64")
        logits = head([x, tf.constant([-1, -1, -1])], training=True).numpy()
        cos = ref.cosines(x.numpy(), head.kernel.numpy()).reshape(3, C, head.centres_per_class).max(axis=2)
        np.testing.assert_allclose(logits, head.scale * cos, atol=1e-9, err_msg=name)
    assert heads.get_head("subcenter_arcface", C).centres_per_class == 3


@pytest.mark.parametrize("name, kwargs, match", [
    ("adaface", {"margin": 2.0}, "margin"), ("adaface", {"h": 0.0}, "h"), ("adaface", {"t_alpha": 1.5}, "t_alpha"),
    ("magface", {"l_a": 120.0}, "l_a"), ("magface", {"l_m": 0.9}, "l_m"), ("magface", {"lambda_g": -1.0}, "lambda_g"),
    ("curricularface", {"momentum": 0.0}, "momentum"), ("subcenter_arcface", {"centres_per_class": 0}, "centres_per_class"),
])
def test_out_of_range_hyper_parameters_name_the_argument(name, kwargs, match):
    with pytest.raises(ValueError, match=f"^{match}: expected"):
        heads.get_head(name, C, **kwargs)


def test_clean_subcentres_keeps_the_dominant_centre_and_drops_far_samples():
    """Class 0: 5 samples near sub-centre 1, 2 near sub-centre 0, one noisy sample opposite both."""
    rng = np.random.default_rng(5)
    kernel = np.linalg.qr(rng.normal(size=(8, 8)))[0][:, :6]  # 2 classes x 3 orthonormal sub-centres
    near = lambda col, n: kernel[:, col] + 0.1 * rng.normal(size=(n, 8))  # noqa: E731
    embeddings = np.concatenate([near(1, 5), near(0, 2), -kernel[:, 1][None], near(5, 4)])
    labels = np.array([0] * 8 + [1] * 4)
    cleaned = heads.clean_subcentres(kernel, embeddings, labels, 3)
    np.testing.assert_array_equal(cleaned.dominant, [1, 2])
    np.testing.assert_allclose(cleaned.centres, kernel[:, [1, 5]], atol=1e-6)
    np.testing.assert_array_equal(cleaned.keep, [True] * 5 + [False] * 3 + [True] * 4)  # 90 and 180 degrees
    assert cleaned.angles[7] == pytest.approx(180.0)


def test_float16_policy_with_partial_statistics_is_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for name in ("adaface", "magface", "curricularface", "subcenter_arcface"):
            head = heads.get_head(name, 50)
            x = tf.constant(np.random.default_rng(0).normal(size=(8, 32)) * 15.0, tf.float16)
            y = tf.constant(np.arange(8) * 6)
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(heads.head_loss(y, head([x, y], training=True)) + heads.feature_loss(head, x))
            grads = tape.gradient(loss, [x, head.kernel])
            assert np.isfinite(loss.numpy()) and all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)
            assert all(np.isfinite(v.numpy()) for v in head.non_trainable_weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")

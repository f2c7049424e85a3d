"""tfface's BatchNormalization and PReLU train like Keras' own layers (outputs, gradients,
moving statistics), checked against float64 NumPy references, and are faster only."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.models.layers import BatchNormalization, PReLU, _cpu_only

SHAPE = (4, 6, 5, 8)


def _numpy_bn(x, gamma, beta, eps):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, mean, var


def _numpy_bn_grads(x, gamma, eps, dy):
    """d(sum(y * dy))/d(x, gamma, beta) for training-mode BN (float64, from the formula)."""
    n = x.shape[0] * x.shape[1] * x.shape[2]
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    xhat = (x - mean) / np.sqrt(var + eps)
    dxhat = dy * gamma
    dx = (n * dxhat - dxhat.sum((0, 1, 2)) - xhat * (dxhat * xhat).sum((0, 1, 2))) / (n * np.sqrt(var + eps))
    return dx, (dy * xhat).sum((0, 1, 2)), dy.sum((0, 1, 2))


def _grads(layer, x, dy, training):
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training) if training is not None else layer(x)
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, [x, *layer.trainable_weights])]


@pytest.mark.parametrize("scale", [True, False])
def test_batch_norm_trains_like_keras_and_the_formula(scale):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, SHAPE).astype(np.float32)
    dy = rng.normal(size=SHAPE).astype(np.float32)
    ours = BatchNormalization(epsilon=1e-5, momentum=0.9, scale=scale)
    theirs = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, scale=scale)
    for layer in (ours, theirs):
        layer.build(SHAPE)
        if scale:
            layer.gamma.assign(rng.uniform(0.5, 1.5, 8).astype(np.float32))
        layer.beta.assign(np.linspace(-1, 1, 8).astype(np.float32))
    theirs.set_weights(ours.get_weights())
    y, grads = _grads(ours, x, dy, training=True)
    y_keras, grads_keras = _grads(theirs, x, dy, training=True)

    gamma = ours.gamma.numpy() if scale else np.ones(8)
    expected, mean, var = _numpy_bn(x.astype(np.float64), gamma, ours.beta.numpy(), 1e-5)
    np.testing.assert_allclose(y, expected, atol=2e-5)
    np.testing.assert_allclose(y, y_keras, atol=2e-5)
    dx, dgamma, dbeta = _numpy_bn_grads(x.astype(np.float64), gamma, 1e-5, dy.astype(np.float64))
    np.testing.assert_allclose(grads[0], dx, atol=2e-5)
    np.testing.assert_allclose(grads[-1], dbeta, atol=2e-4)
    if scale:
        np.testing.assert_allclose(grads[1], dgamma, atol=2e-4)
    for ours_grad, keras_grad in zip(grads, grads_keras):
        np.testing.assert_allclose(ours_grad, keras_grad, atol=2e-4)
    # Moving averages: momentum 0.9 from (0, 1), with the biased batch variance, as Keras.
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-6)
    # Inference is Keras' own path: identical outputs from identical weights.
    theirs.set_weights(ours.get_weights())
    np.testing.assert_array_equal(ours(x, training=False).numpy(), theirs(x, training=False).numpy())


def test_batch_norm_in_a_tf_function_and_on_2d_inputs():
    x = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    ours, theirs = BatchNormalization(), keras.layers.BatchNormalization()
    np.testing.assert_array_equal(ours(x, training=True).numpy(), theirs(x, training=True).numpy())  # Keras' path
    layer = BatchNormalization(momentum=0.5)
    step = tf.function(lambda images: layer(images, training=True))
    images = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    step(images), step(images)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.75 * images.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-7)


def test_batch_norm_under_mixed_bfloat16():
    images = np.random.default_rng(4).normal(2.0, 3.0, SHAPE).astype(np.float32)
    ours = BatchNormalization(dtype="mixed_bfloat16")
    reference = keras.layers.BatchNormalization()
    y = ours(tf.cast(images, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16 and ours.moving_mean.dtype == "float32"
    expected = reference(tf.cast(tf.cast(images, tf.bfloat16), tf.float32), training=True).numpy()
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected, atol=0.05)  # bfloat16 rounding
    np.testing.assert_allclose(ours.moving_mean.numpy(), reference.moving_mean.numpy(), rtol=1e-4)


@pytest.mark.parametrize("training", [None, True])  # True: the XLA kernels on CPU-only hosts
def test_prelu_matches_keras_and_the_formula(training):
    rng = np.random.default_rng(3)
    x = rng.normal(size=SHAPE).astype(np.float32)
    x[0, 0, 0, :2] = 0.0  # the kink
    dy = rng.normal(size=SHAPE).astype(np.float32)
    alpha = rng.uniform(0.0, 0.5, (1, 1, 8)).astype(np.float32)
    ours, theirs = PReLU(shared_axes=[1, 2]), keras.layers.PReLU(shared_axes=[1, 2])
    for layer in (ours, theirs):
        layer.build(SHAPE)
        layer.alpha.assign(alpha)
    y, (dx, dalpha) = _grads(ours, x, dy, training)
    y_keras, (dx_keras, dalpha_keras) = _grads(theirs, x, dy, None)
    np.testing.assert_array_equal(y, y_keras)
    np.testing.assert_array_equal(y, np.where(x > 0, x, alpha * x))
    np.testing.assert_allclose(dx, np.where(x > 0, dy, alpha * dy), rtol=1e-6)  # PyTorch's subgradient at 0
    off_kink = x != 0  # Keras' subgradient there is 0
    np.testing.assert_allclose(dx[off_kink], dx_keras[off_kink], rtol=1e-6)
    expected = (np.minimum(x, 0).astype(np.float64) * dy).sum(axis=(0, 1, 2)).reshape(1, 1, 8)
    np.testing.assert_allclose(dalpha, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dalpha, dalpha_keras, rtol=1e-5, atol=1e-6)
    shared = PReLU(shared_axes=[1, 2, 3])  # one slope for everything: Keras' path
    np.testing.assert_array_equal(shared(x).numpy(), keras.layers.PReLU(shared_axes=[1, 2, 3])(x).numpy())


def _xla_functions(layer, training, dtype=tf.float32) -> set:
    graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(tf.TensorSpec(SHAPE, dtype)).graph
    library = graph.as_graph_def().library.function
    return {f.signature.name for f in library if f.attr["_XlaMustCompile"].b}


def test_prelu_trains_through_xla_on_cpu_only_and_infers_without_it():
    layer = PReLU(shared_axes=[1, 2])
    layer.build(SHAPE)
    assert bool(_xla_functions(layer, training=True)) == _cpu_only()  # CPU-only hosts only
    assert not _xla_functions(layer, training=False)
    assert not _xla_functions(layer, training=None)


def test_prelu_xla_path_under_mixed_bfloat16():
    rng = np.random.default_rng(5)
    x = tf.cast(rng.normal(size=SHAPE), tf.bfloat16)
    dy = tf.cast(rng.normal(size=SHAPE), tf.bfloat16)
    layer = PReLU(shared_axes=[1, 2], dtype="mixed_bfloat16")
    layer.build(SHAPE)
    layer.alpha.assign(rng.uniform(0.0, 0.5, (1, 1, 8)))
    assert bool(_xla_functions(layer, training=True, dtype=tf.bfloat16)) == _cpu_only()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    dx, dalpha = tape.gradient(y, [x, layer.alpha], output_gradients=dy)
    assert y.dtype == dx.dtype == tf.bfloat16 and dalpha.dtype == tf.float32
    x64, dy64 = (tf.cast(t, tf.float64).numpy() for t in (x, dy))
    alpha = tf.cast(tf.cast(layer.alpha, tf.bfloat16), tf.float64).numpy()
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), np.where(x64 > 0, x64, alpha * x64), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(tf.cast(dx, tf.float64).numpy(), np.where(x64 > 0, dy64, alpha * dy64), rtol=1e-2, atol=1e-2)
    expected = (np.minimum(x64, 0) * dy64).sum(axis=(0, 1, 2)).reshape(1, 1, 8)
    np.testing.assert_allclose(dalpha.numpy(), expected, rtol=5e-2, atol=5e-2)

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.data import pipeline, tfrecord


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    with tfrecord.ShardedWriter(str(out), 3, [f"c{i}" for i in range(6)]) as writer:
        for i in range(30):
            grey = i % 5 == 0
            image = rng.integers(0, 256, (20, 24) if grey else (20, 24, 3)).astype(np.uint8)
            ext, fmt = (".png", "png") if i % 2 else (".jpg", "jpeg")
            writer.write(tfrecord.make_example(cv2.imencode(ext, image)[1].tobytes(), i % 6, 20, 24, fmt))
    return tfrecord.list_shards(str(out))


def _take(ds, n):
    return [tuple(np.asarray(t) for t in batch) for batch in ds.take(n)]


def test_training_stream_is_deterministic_given_a_seed(shards):
    augment = pipeline.Augment(random_crop=True, random_flip=True, random_rotate=True)
    make = lambda seed: pipeline.make_dataset(shards, 4, (16, 16), augment=augment, seed=seed)  # noqa: E731
    first, again, other = _take(make(3), 12), _take(make(3), 12), _take(make(4), 12)
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    images, labels = first[0]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.float32 and labels.dtype == np.int32
    assert 0 <= images.min() and images.max() <= 255


def test_evaluation_pass_is_ordered_complete_and_unaugmented(shards):
    batches = _take(pipeline.make_dataset(shards, 7, (20, 24), training=False), 100)
    labels = np.concatenate([b[1] for b in batches])
    assert len(labels) == 30 and sorted(labels.tolist()) == sorted([i % 6 for i in range(30)])
    again = _take(pipeline.make_dataset(shards, 7, (20, 24), training=False), 100)
    np.testing.assert_array_equal(batches[0][0], again[0][0])


def test_rotate_matches_opencv():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (31, 41, 3)).astype(np.float32), (0, 0), 2)
    degrees = 7.0
    ours = pipeline.rotate(tf.constant(image), tf.constant(np.radians(degrees), tf.float32)).numpy()
    # Both rotate counter-clockwise on screen for a positive angle.
    matrix = cv2.getRotationMatrix2D(((41 - 1) / 2, (31 - 1) / 2), degrees, 1.0)
    expected = cv2.warpAffine(image, matrix, (41, 31), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    inner = (slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(ours[inner], expected[inner], atol=0.05)


def test_zero_rotation_is_identity():
    image = tf.random.uniform((9, 11, 3), 0, 255)
    np.testing.assert_allclose(pipeline.rotate(image, tf.constant(0.0)).numpy(), image.numpy(), atol=1e-4)

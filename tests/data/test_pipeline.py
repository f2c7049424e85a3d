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


def _erase_box_reference(height, width, draws):
    """Random erasing's rectangle in NumPy (float64), for the same four uniform draws."""
    area = height * width * (pipeline.ERASE_AREA[0] + draws[0] * (pipeline.ERASE_AREA[1] - pipeline.ERASE_AREA[0]))
    low, high = np.log(pipeline.ERASE_ASPECT)
    aspect = np.exp(low + draws[1] * (high - low))
    box_h = int(np.clip(np.round(np.sqrt(area * aspect)), 1, height))
    box_w = int(np.clip(np.round(np.sqrt(area / aspect)), 1, width))
    return [int(np.floor(draws[2] * (height - box_h + 1))), int(np.floor(draws[3] * (width - box_w + 1))), box_h, box_w]


def test_erase_box_matches_numpy_and_stays_inside():
    rng = np.random.default_rng(2)
    for height, width in ((32, 32), (20, 24), (7, 40)):
        for draws in [rng.uniform(0, 1, 4) for _ in range(50)] + [np.array([0.0] * 4), np.array([0.999999] * 4)]:
            top, left, box_h, box_w = pipeline.erase_box(height, width, tf.constant(draws, tf.float32)).numpy()
            np.testing.assert_array_equal([top, left, box_h, box_w], _erase_box_reference(height, width, draws))
            assert 0 <= top and top + box_h <= height and 0 <= left and left + box_w <= width


def test_random_erase_fills_one_rectangle_with_noise_at_its_probability():
    image = tf.fill((20, 24, 3), 100.0)
    erased = 0
    for i in range(200):
        seed = tf.constant([i, 3])
        out = pipeline.random_erase(image, 0.5, seed).numpy()
        np.testing.assert_array_equal(out, pipeline.random_erase(image, 0.5, seed).numpy())  # deterministic
        changed = np.argwhere((out != 100.0).any(axis=2))
        if len(changed):
            erased += 1
            (top, left), (bottom, right) = changed.min(0), changed.max(0)
            box = out[top:bottom + 1, left:right + 1]
            assert box.min() >= 0 and box.max() <= 255 and box.std() > 30  # uniform noise, not a constant
            outside = np.ones((20, 24), bool)
            outside[top:bottom + 1, left:right + 1] = False
            assert (out[outside] == 100.0).all()
        assert not (pipeline.random_erase(image, 0.0, seed).numpy() != 100.0).any()
    assert 70 <= erased <= 130


def test_training_stream_erases_one_rectangle_per_image(shards):
    def stream(augment):
        return _take(pipeline.make_dataset(shards, 6, (20, 24), augment=augment, seed=5), 3)

    for (plain, labels), (erased, erased_labels) in zip(stream(pipeline.Augment()),
                                                          stream(pipeline.Augment(random_erase=1.0))):
        np.testing.assert_array_equal(labels, erased_labels)
        for a, b in zip(plain, erased):
            changed = np.argwhere((a != b).any(axis=2))
            assert len(changed)  # probability 1: every image has its rectangle
            (top, left), (bottom, right) = changed.min(0), changed.max(0)
            outside = np.ones((20, 24), bool)
            outside[top:bottom + 1, left:right + 1] = False
            np.testing.assert_array_equal(a[outside], b[outside])

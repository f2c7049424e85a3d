import cv2
import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.core.images import resize
from tfface.evaluation import embed_paths, evaluate_pairs, load_image


def _mean_colour_and_left_column(images):
    """A transparent 'embedding' that changes when an image is mirrored."""
    return np.concatenate([images.mean(axis=(1, 2)), images[:, :, 0, :].mean(axis=1)], axis=1)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for person in ("Ann", "Bob"):
        (tmp_path / person).mkdir()
        for k in (1, 2):
            path = tmp_path / person / f"{person}_{k:04d}.jpg"
            cv2.imwrite(str(path), rng.integers(0, 256, (20, 30, 3)).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 100])
            paths.append(str(path))
    return tmp_path, paths


def test_load_image_is_rgb_and_resized(photos):
    _, paths = photos
    image = load_image(paths[0], (10, 15))
    rgb = cv2.imread(paths[0])[..., ::-1].copy()
    np.testing.assert_array_equal(image, resize(rgb, (10, 15)).numpy())  # the image contract's resize
    with pytest.raises(UserError, match="cannot read"):
        load_image(paths[0] + ".missing", (10, 15))


def test_flipped_images_are_concatenated(photos):
    _, paths = photos
    plain = embed_paths(_mean_colour_and_left_column, paths, (20, 30), batch_size=3)
    flipped = embed_paths(_mean_colour_and_left_column, paths, (20, 30), batch_size=3, use_flipped_images=True)
    assert plain.shape == (4, 6) and flipped.shape == (4, 12)
    np.testing.assert_allclose(flipped[:, :6], plain)
    images = np.stack([load_image(p, (20, 30)) for p in paths])
    np.testing.assert_allclose(flipped[:, 6:], _mean_colour_and_left_column(images[:, :, ::-1]))


def test_evaluate_pairs_end_to_end(photos):
    root, _ = photos
    (root / "pairs.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t2\nBob\t1\t2\nBob\t1\tAnn\t2\n")
    result = evaluate_pairs(_mean_colour_and_left_column, str(root), str(root / "pairs.txt"), (20, 30), nrof_folds=2)
    assert result.accuracy.shape == (2,)

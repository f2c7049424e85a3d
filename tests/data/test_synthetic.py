import os

import cv2
import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from tfface.data import synthetic, tfrecord
from tfface.evaluation import get_paths, read_pairs


def test_rendering_is_a_function_of_the_seed():
    identity = synthetic.sample_identity(synthetic._identity_rng(1, 4))
    a = synthetic.render(identity, synthetic._identity_rng(1, 4, 0))
    b = synthetic.render(identity, synthetic._identity_rng(1, 4, 0))
    c = synthetic.render(identity, synthetic._identity_rng(1, 4, 1))
    assert a.shape == (112, 112, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1.0  # another image of the same person differs


def test_dataset_layout_splits_and_pairs(tmp_path):
    paths = synthetic.make_synthetic_dataset(str(tmp_path), 6, 3, 20, 3, num_shards=2, seed=2)
    info = tfrecord.read_dataset_info(paths["train_dir"])
    assert info["num_classes"] == 6 and info["num_examples"] == 18 and info["image_size"] == [112, 112]
    verify_ids = sorted(d for d in os.listdir(paths["verify_dir"]) if d.startswith("synth_"))
    assert len(verify_ids) == 20 and set(verify_ids).isdisjoint(info["class_names"])
    images, issame = get_paths(paths["verify_dir"], read_pairs(paths["pairs"]))
    assert len(images) == 2 * 40 and issame.sum() == 20  # 10 folds x (2 same + 2 different)
    for fold in range(10):  # LFW's fold structure: same pairs, then different pairs
        assert issame[fold * 4:(fold + 1) * 4].tolist() == [True, True, False, False]
    mtime = os.path.getmtime(paths["pairs"])
    synthetic.make_synthetic_dataset(str(tmp_path), 6, 3, 20, 3, num_shards=2, seed=2)  # complete: no-op
    assert os.path.getmtime(paths["pairs"]) == mtime


def test_learnable_but_not_trivial():
    """A linear classifier on 12x12 thumbnails beats chance by far, yet is far from perfect."""
    features, labels = [], []
    num_ids, per_id = 20, 12
    for index in range(num_ids):
        identity = synthetic.sample_identity(synthetic._identity_rng(5, index))
        for k in range(per_id):
            image = synthetic.render(identity, synthetic._identity_rng(5, index, k))
            features.append(cv2.resize(image, (12, 12), interpolation=cv2.INTER_AREA).reshape(-1) / 255.0)
            labels.append(index)
    features, labels = np.array(features), np.array(labels)
    train = np.tile(np.arange(per_id) < 8, num_ids)
    accuracy = RidgeClassifier(alpha=1.0).fit(features[train], labels[train]).score(features[~train], labels[~train])
    assert 4 / num_ids < accuracy < 0.9, accuracy

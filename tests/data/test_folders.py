import os
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.data import folders, tfrecord
from tfface.core.errors import UserError


def _make_tree(root, counts):
    for i, n in enumerate(counts):
        d = root / f"id{i}"
        d.mkdir(parents=True)
        for k in range(n):
            cv2.imwrite(str(d / f"{k}.png"), np.full((8, 8, 3), 10 * i + k, np.uint8))
    return folders.get_dataset(str(root))


def test_get_dataset_sorted_and_images_only(tmp_path):
    dataset = _make_tree(tmp_path, [2, 3])
    (tmp_path / "id0" / "notes.txt").write_text("not an image")
    (tmp_path / "stray.jpg").write_bytes(b"")  # files at the top level are not identities
    dataset = folders.get_dataset(str(tmp_path))
    assert [c.name for c in dataset] == ["id0", "id1"] and [len(c) for c in dataset] == [2, 3]


def test_split_classes_is_identity_disjoint(tmp_path):
    dataset = _make_tree(tmp_path, [2] * 10)
    train, val = folders.split_dataset(dataset, 0.3, mode="SPLIT_CLASSES", seed=1)
    assert len(train) == 7 and len(val) == 3
    assert {c.name for c in train}.isdisjoint({c.name for c in val})
    assert {c.name for c in train} | {c.name for c in val} == {c.name for c in dataset}


def test_split_images_keeps_floor_for_training(tmp_path):
    dataset = _make_tree(tmp_path, [10, 3, 1])
    train, val = folders.split_dataset(dataset, 0.25, min_nrof_images_per_class=2, mode="SPLIT_IMAGES", seed=0)
    # floor(10*.75)=7 train / 3 val; floor(3*.75)=2 / 1; the single-image identity is dropped
    assert [(c.name, len(c)) for c in train] == [("id0", 7), ("id1", 2)]
    assert [(c.name, len(c)) for c in val] == [("id0", 3), ("id1", 1)]
    for t, v in zip(train, val):
        assert set(t.image_paths).isdisjoint(v.image_paths)
    again, _ = folders.split_dataset(dataset, 0.25, min_nrof_images_per_class=2, mode="SPLIT_IMAGES", seed=0)
    assert [c.image_paths for c in again] == [c.image_paths for c in train]


def test_split_by_count_and_min_images(tmp_path):
    dataset = _make_tree(tmp_path, [5, 2, 4])
    train, test = folders.split_by_count(dataset, nrof_train_images_per_class=3, min_nrof_images_per_class=4)
    assert [(c.name, len(c)) for c in train] == [("id0", 3), ("id2", 3)]
    assert [(c.name, len(c)) for c in test] == [("id0", 2), ("id2", 1)]


def test_bad_split_arguments(tmp_path):
    dataset = _make_tree(tmp_path, [2])
    with pytest.raises(UserError, match="validation_set_split_mode"):
        folders.split_dataset(dataset, 0.2, mode="SPLIT_PEOPLE")
    with pytest.raises(UserError, match="split_ratio"):
        folders.split_dataset(dataset, 1.5)


def test_missing_or_empty_dirs(tmp_path):
    with pytest.raises(UserError, match="is not a directory"):
        folders.get_dataset(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="is empty"):
        folders.get_dataset(str(tmp_path))
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="no identity sub-folders"):
        folders.get_dataset(str(tmp_path))


def test_conversion_skips_and_reports_bad_files(tmp_path):
    src = tmp_path / "src"
    _make_tree(src, [2, 2])
    (src / "id0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (src / "id1" / "empty.png").write_bytes(b"")
    cv2.imwrite(str(src / "id1" / "deep.png"), np.full((8, 8, 3), 40000, np.uint16))
    cv2.imwrite(str(src / "id1" / "alpha.png"), np.full((8, 8, 4), 200, np.uint8))
    info = folders.dataset_to_tfrecords(folders.get_dataset(str(src)), str(tmp_path / "out"), num_shards=2)
    assert info["num_examples"] == 6 and info["num_skipped"] == 2 and info["examples_per_class"] == [2, 4]
    report = tfrecord.json.load(open(tmp_path / "out" / folders.REPORT_FILE))
    assert sorted(os.path.basename(s["path"]) for s in report["skipped"]) == ["corrupt.jpg", "empty.png"]
    images = [
        tf.io.decode_image(tfrecord.parse_example(r)["image/encoded"], channels=3)
        for r in tf.data.TFRecordDataset(tfrecord.list_shards(str(tmp_path / "out")))
    ]
    assert all(im.shape == (8, 8, 3) and im.dtype == tf.uint8 for im in images)


def test_grey_pgm_faces_convert(orl_dir, tmp_path):
    src = tmp_path / "orl"
    for name in ("s1", "s2"):
        shutil.copytree(os.path.join(orl_dir, name), src / name)
    info = folders.dataset_to_tfrecords(folders.get_dataset(str(src)), str(tmp_path / "out"), num_shards=1)
    assert info["num_examples"] == 20 and info["num_skipped"] == 0 and info["image_size"] == [112, 92]
    record = next(iter(tf.data.TFRecordDataset(tfrecord.list_shards(str(tmp_path / "out")))))
    example = tfrecord.parse_example(record)
    assert example["image/format"] == b"png"
    image = tf.io.decode_image(example["image/encoded"], channels=3).numpy()
    assert image.shape == (112, 92, 3) and (image[..., 0] == image[..., 2]).all()

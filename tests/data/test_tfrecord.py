import glob
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.data import tfrecord


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((4, 6, 3), value, np.uint8))[1].tobytes()


def test_round_trip_every_field(tmp_path):
    landmarks = np.arange(10, dtype=np.float32)
    with tfrecord.ShardedWriter(str(tmp_path), 2, ["ann", "bob"], image_size=(4, 6), alignment="arcface") as w:
        w.write(tfrecord.make_example(_jpeg(10), 1, 4, 6, "jpeg", "bob", "/x/bob/1.jpg", 7, landmarks, [1, 2, 3, 4]))
        w.write(tfrecord.make_example(_jpeg(20), 0, 4, 6, text="ann"))
    files = tfrecord.list_shards(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["data-00000-of-00002.tfrecord", "data-00001-of-00002.tfrecord"]
    parsed = [tfrecord.parse_example(r) for r in tf.data.TFRecordDataset(files)]
    first, second = parsed
    assert first["image/class/label"] == 1 and first["image/class/text"] == b"bob"
    assert first["image/source_id"] == b"/x/bob/1.jpg" and first["image/sequence_id"] == 7
    np.testing.assert_array_equal(first["image/landmarks"], landmarks)
    np.testing.assert_array_equal(first["image/bbox"], [1, 2, 3, 4])
    assert (first["image/height"], first["image/width"], first["image/format"]) == (4, 6, b"jpeg")
    assert second["image/sequence_id"] == -1  # defaults for optional fields
    np.testing.assert_array_equal(second["image/landmarks"], [-1] * 10)
    assert abs(int(tf.io.decode_jpeg(second["image/encoded"]).numpy().mean()) - 20) <= 2
    info = tfrecord.read_dataset_info(str(tmp_path))
    assert info["num_classes"] == 2 and info["num_examples"] == 2 and info["class_names"] == ["ann", "bob"]
    assert info["examples_per_class"] == [1, 1] and info["image_size"] == [4, 6] and info["alignment"] == "arcface"
    assert sum(info["shards"].values()) == 2


def test_nothing_is_visible_until_close_and_abort_leaves_nothing(tmp_path):
    writer = tfrecord.ShardedWriter(str(tmp_path), 3, ["a"])
    writer.write(tfrecord.make_example(_jpeg(0), 0, 4, 6))
    assert glob.glob(str(tmp_path / "*.tfrecord")) == []  # only temporary names while writing
    assert not os.path.exists(tmp_path / tfrecord.INFO_FILE)
    writer.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError):
        with tfrecord.ShardedWriter(str(tmp_path), 1, ["a"]) as w:
            w.write(tfrecord.make_example(_jpeg(0), 0, 4, 6))
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_bad_values_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="10 values"):
        tfrecord.make_example(b"x", 0, 1, 1, landmarks=[1, 2])
    with pytest.raises(ValueError, match="image_format"):
        tfrecord.make_example(b"x", 0, 1, 1, "gif")
    with tfrecord.ShardedWriter(str(tmp_path), 1, ["a"]) as w, pytest.raises(ValueError, match="label 3"):
        w.write(tfrecord.make_example(_jpeg(0), 3, 4, 6))


def test_missing_dataset_gives_user_errors(tmp_path):
    with pytest.raises(tfrecord.UserError, match="no \\*.tfrecord shards"):
        tfrecord.list_shards(str(tmp_path))
    with pytest.raises(tfrecord.UserError, match="dataset_info.json"):
        tfrecord.read_dataset_info(str(tmp_path))


def test_info_json_written_atomically(tmp_path):
    path = str(tmp_path / "x.json")
    tfrecord.write_json_atomic(path, {"a": 1})
    assert json.load(open(path)) == {"a": 1} and os.listdir(tmp_path) == ["x.json"]

"""InsightFace .rec -> TFRecord shards: content, bad records, resume, .bin sets, the CLI."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import cv2
import pytest
import tensorflow as tf

from tfface.data.insightface import check_bin, prepare_insightface
from tfface.data.recordio import InsightFaceRecord, RecordIOError, write_insightface
from tfface.data.tfrecord import list_shards, parse_example, read_dataset_info
from tfface.core.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORRUPT = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def jpeg_faces(faces_dir: str, count: int) -> list[bytes]:
    names = sorted(n for n in os.listdir(faces_dir) if n.endswith(".jpg"))[:count]
    return [cv2.imencode(".jpg", cv2.resize(cv2.imread(os.path.join(faces_dir, n)), (112, 112)))[1].tobytes()
            for n in names]


@pytest.fixture
def rec_dir(faces_dir, tmp_path) -> str:
    """3 identities x 3 real JPEGs, one corrupt image record (identity 1), a .bin set."""
    jpegs = jpeg_faces(faces_dir, 9)
    images = [(i // 3, jpegs[i]) for i in range(9)]
    images.insert(4, (1, CORRUPT))
    root = tmp_path / "rec"
    write_insightface(str(root), images, (112, 112))
    with open(root / "lfw.bin", "wb") as f:
        pickle.dump((jpegs[:4], [True, False]), f, protocol=4)
    return str(root)


def test_convert_skip_bad_and_resume(rec_dir, tmp_path):
    out = str(tmp_path / "out")
    with InsightFaceRecord(rec_dir) as ds:
        bad_offset = ds.reader.index[5]
        expected = {r.key: (r.label, r.encoded) for r in ds.images() if r.encoded != CORRUPT}
    with pytest.raises(RecordIOError, match=f"train.rec: byte {bad_offset}: image record 5: unreadable jpeg"):
        prepare_insightface(rec_dir, out, num_shards=2, workers=1, progress=False)

    info = prepare_insightface(rec_dir, out, num_shards=2, workers=1, skip_bad=True, progress=False)
    assert info["num_examples"] == 9 and info["num_classes"] == 3 and info["examples_per_class"] == [3, 3, 3]
    assert info["alignment"] == "arcface" and info["image_size"] == [112, 112]
    assert len(info["bad_records"]) == 1 and f"byte {bad_offset}" in info["bad_records"][0]
    assert info["verification_sets"] == {"lfw.bin": 2}
    assert read_dataset_info(out) == info and check_bin(os.path.join(out, "lfw.bin")) == 2
    shards = list_shards(out)
    assert [os.path.basename(s) for s in shards] == ["data-00000-of-00002.tfrecord", "data-00001-of-00002.tfrecord"]
    got = {}
    for shard in shards:
        for raw in tf.data.TFRecordDataset(shard):
            ex = parse_example(raw)
            key = int(ex["image/source_id"].numpy().decode().split("#")[1])
            got[key] = (int(ex["image/class/label"]), ex["image/encoded"].numpy())
            assert (int(ex["image/height"]), int(ex["image/width"])) == (112, 112)
    assert got == expected

    # Resume: only the missing shard is converted again.
    mtime = os.path.getmtime(shards[0])
    os.remove(shards[1])
    info2 = prepare_insightface(rec_dir, out, num_shards=2, workers=1, skip_bad=True, progress=False)
    assert os.path.getmtime(shards[0]) == mtime and os.path.isfile(shards[1])
    assert info2["num_examples"] == 9 and info2["shards"] == info["shards"]
    info3 = prepare_insightface(rec_dir, out, num_shards=3, workers=1, skip_bad=True, progress=False)
    assert [os.path.basename(s) for s in list_shards(out)] == sorted(info3["shards"]) and len(info3["shards"]) == 3


def test_bin_set_checks(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(pickle.dumps(([b"\xff\xd8\xff" + b"1"] * 3, [True])))
    with pytest.raises(UserError, match="3 images for 1 pairs"):
        check_bin(str(path))

    class Evil:
        def __reduce__(self):
            return os.system, ("true",)

    path.write_bytes(pickle.dumps(([Evil()], [])))
    with pytest.raises(UserError, match="refuses to load posix.system"):
        check_bin(str(path))


@pytest.mark.slow
def test_cli_parallel_workers(rec_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "tfface.data.prepare_insightface", f"--rec_dir={rec_dir}", f"--output_dir={out}",
               "--num_shards=3", "--workers=2", "--skip_bad"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "images/s" in run.stderr and "Skipped 1 bad records" in run.stdout
    info = read_dataset_info(str(out))
    # keys 1..10 round-robin over 3 shards; key 5 (shard 1) is the corrupt one
    assert info["num_examples"] == 9 and list(info["shards"].values()) == [4, 2, 3]
    run = subprocess.run(command[:3] + [f"--rec_dir={tmp_path}", f"--output_dir={out}"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1] == (
        f"error: rec_dir: '{tmp_path}' has no train.rec (expected an InsightFace dataset: train.rec, train.idx, property)")

"""align_dataset_mtcnn end to end: folders and TFRecords, broken files, resume, the CLI."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.core.errors import UserError
from tfface.data.tfrecord import list_shards, parse_example, read_dataset_info
from tfface_align.align_dataset_mtcnn import align_dataset
from tfface_align.aligner import main_face, output_size

DATA = os.path.join(os.path.dirname(__file__), "data")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def dataset(faces_dir, tmp_path) -> str:
    """Two identities, small copies of real photos, plus broken files."""
    root = tmp_path / "raw"
    for identity, names in {"angelina": ["img1.jpg", "img2.jpg"], "couple": ["couple.jpg"]}.items():
        (root / identity).mkdir(parents=True)
        for name in names:
            image = cv2.imread(os.path.join(faces_dir, name))
            s = 480 / max(image.shape[:2])
            cv2.imwrite(str(root / identity / name), cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
    shutil.copy(os.path.join(DATA, "face_cmyk.jpg"), root / "angelina" / "cmyk.jpg")
    (root / "angelina" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)
    (root / "couple" / "empty.png").write_bytes(b"")
    (root / "couple" / "readme.txt").write_text("not a photo")
    (root / "couple" / "blank.png").write_bytes(cv2.imencode(".png", np.full((120, 90, 3), 200, np.uint8))[1])
    return str(root)


def test_folders_and_tfrecords_with_resume(detector, dataset, tmp_path):
    out = str(tmp_path / "aligned")
    report = align_dataset(dataset, out, alignment="arcface", output_format="both", num_shards=2,
                           batch_size=3, detector=detector, progress=False)
    assert report["photos"] == 8 and report["aligned_photos"] == 4 and report["no_face"] == 1
    assert report["skipped"] == {"corrupt": 1, "empty": 1, "not_an_image": 1}
    assert report["converted"].get("cmyk") == 1
    assert {e["path"] for e in report["skipped_files"]} == {
        "angelina/corrupt.jpg", "couple/empty.png", "couple/readme.txt", "couple/blank.png"}

    pngs = sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "*", "*.png")))
    assert pngs == ["angelina/cmyk.png", "angelina/img1.png", "angelina/img2.png", "couple/couple.png"]
    assert cv2.imread(os.path.join(out, "angelina", "img1.png")).shape == (112, 112, 3)

    lines = open(glob.glob(os.path.join(out, "bounding_boxes_*.txt"))[0]).read().splitlines()
    assert len(lines) == 8
    boxed = [line.split() for line in lines if len(line.split()) == 5]
    assert len(boxed) == 4 and all(int(x2) > int(x1) for _, x1, _, x2, _ in boxed)

    info = read_dataset_info(out)
    assert info["class_names"] == ["angelina", "couple"] and info["alignment"] == "arcface"
    assert info["num_examples"] == 4 and info["examples_per_class"] == [3, 1] and info["image_size"] == [112, 112]
    shards = list_shards(out)
    assert len(shards) == 2
    examples = [parse_example(r) for r in tf.data.TFRecordDataset(shards)]
    for ex in examples:
        image = tf.io.decode_png(ex["image/encoded"]).numpy()
        assert image.shape == (112, 112, 3)
        marks = ex["image/landmarks"].numpy().reshape(5, 2)
        # Landmarks sit near the template after alignment; boxes are in the original photo.
        from tfface_align import ARCFACE_TEMPLATE

        assert np.abs(marks - ARCFACE_TEMPLATE).max() < 12
        x1, y1, x2, y2 = ex["image/bbox"].numpy()
        assert 0 <= x1 < x2 <= 500 and 0 <= y1 < y2 <= 500
    assert sorted(int(ex["image/class/label"]) for ex in examples) == [0, 0, 0, 1]

    # Resume: a new photo is aligned, nothing else is redone, shards are rebuilt without duplicates.
    shutil.copy(os.path.join(dataset, "angelina", "img2.jpg"), os.path.join(dataset, "couple", "again.jpg"))
    mtime = os.path.getmtime(os.path.join(out, "angelina", "img1.png"))
    report = align_dataset(dataset, out, alignment="arcface", output_format="both", num_shards=1,
                           batch_size=3, detector=detector, progress=False)
    assert report["already_done"] == 8 and report["faces_written"] == 1 and report["aligned_photos"] == 5
    assert report["skipped"] == {"corrupt": 1, "empty": 1, "not_an_image": 1}
    assert os.path.getmtime(os.path.join(out, "angelina", "img1.png")) == mtime
    assert [os.path.basename(s) for s in list_shards(out)] == ["data-00000-of-00001.tfrecord"]
    assert read_dataset_info(out)["num_examples"] == 5
    with open(os.path.join(out, "align_report.json")) as f:
        assert json.load(f)["aligned_photos"] == 5
    with pytest.raises(UserError, match="image_size"):  # resuming with other settings would mix them
        align_dataset(dataset, out, alignment="arcface", image_size=128, output_format="both",
                      detector=detector, progress=False)


def test_interrupted_journal_is_read_up_to_the_break(detector, dataset, tmp_path):
    out = str(tmp_path / "aligned")
    align_dataset(dataset, out, alignment="facenet_crop", image_size=64, margin=16, output_format="tfrecord",
                  detector=detector, progress=False)
    journal = glob.glob(os.path.join(out, ".tfface_align", "journal-*.tfrecord"))[0]
    data = open(journal, "rb").read()
    with open(journal, "wb") as f:  # the last record cut in half, as after a crash
        f.write(data[:-100])
    os.remove(os.path.join(out, "dataset_info.json"))
    report = align_dataset(dataset, out, alignment="facenet_crop", image_size=64, margin=16,
                           output_format="tfrecord", detector=detector, progress=False)
    assert report["faces_written"] == 1  # the photo of the torn record is aligned again
    assert report["tfrecord"]["examples"] == 4
    assert not glob.glob(os.path.join(out, "*", "*.png"))  # tfrecord only: no folders


def test_main_face_is_facenets_choice():
    boxes = np.array([[0, 0, 100, 100, 1], [200, 200, 280, 280, 1], [10, 180, 130, 300, 1]], float)
    # area - 2 * squared distance of the centre from the photo centre (240, 240)
    scores = [(b[2] - b[0]) * (b[3] - b[1]) - 2 * (((b[0] + b[2]) / 2 - 240) ** 2 + ((b[1] + b[3]) / 2 - 240) ** 2)
              for b in boxes]
    assert main_face(boxes, 480, 480) == int(np.argmax(scores)) == 1


def test_output_sizes():
    assert output_size("facenet_crop", None) == (182, 182)
    assert output_size("arcface", None) == (112, 112)
    assert output_size("sphereface", None) == (112, 96)
    assert output_size("sphereface", 224) == (224, 192)
    assert output_size("dlib", None) == (150, 150)


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-m", "tfface_align.align_dataset_mtcnn", str(tmp_path / "nope"),
                          str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"error: input_dir: '{tmp_path / 'nope'}' is not a directory"

"""beam_align on Beam's DirectRunner: the same faces and crops as align_dataset_mtcnn."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.data.tfrecord import list_shards, parse_example, read_dataset_info
from tfface_align.align_dataset_mtcnn import align_dataset

beam = pytest.importorskip("apache_beam", reason="apache-beam is the optional extra tfface[beam]")

from tfface_align.beam_pipeline import AlignDoFn, build_pipeline  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def raw(faces_dir, tmp_path_factory) -> str:
    """Two identities of small real photos, a corrupt file and a photo without a face."""
    root = tmp_path_factory.mktemp("beam") / "raw"
    for identity, names in {"angelina": ["img1.jpg", "img2.jpg"], "couple": ["couple.jpg", "img3.jpg"]}.items():
        (root / identity).mkdir(parents=True)
        for name in names:
            image = cv2.imread(os.path.join(faces_dir, name))
            s = 320 / max(image.shape[:2])
            cv2.imwrite(str(root / identity / name), cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
    (root / "angelina" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)
    (root / "couple" / "blank.png").write_bytes(cv2.imencode(".png", np.full((90, 90, 3), 200, np.uint8))[1])
    return str(root)


def _examples(out: str) -> dict:
    found = {}
    for record in tf.data.TFRecordDataset(list_shards(out)):
        ex = parse_example(record)
        found[ex["image/source_id"].numpy().decode()] = (
            int(ex["image/class/label"]), tf.io.decode_png(ex["image/encoded"]).numpy(),
            ex["image/landmarks"].numpy(), ex["image/bbox"].numpy())
    return found


@pytest.mark.slow
def test_direct_runner_matches_align_dataset_mtcnn(raw, detector, tmp_path):
    beam_out = str(tmp_path / "beam")
    with beam.Pipeline(runner="DirectRunner") as pipeline:
        build_pipeline(pipeline, os.path.join(raw, "*", "*"), beam_out, alignment="arcface", num_shards=2,
                       batch_size=4)
    ref_out = str(tmp_path / "ref")
    align_dataset(raw, ref_out, alignment="arcface", output_format="tfrecord", batch_size=4, detector=detector,
                  progress=False)

    got, ref = _examples(beam_out), _examples(ref_out)
    assert sorted(got) == sorted(ref) and len(got) == 4
    for source, (label, image, marks, box) in ref.items():
        g_label, g_image, g_marks, g_box = got[source]
        assert g_label == label and g_image.shape == image.shape == (112, 112, 3)
        np.testing.assert_allclose(g_marks, marks, atol=0.05)
        np.testing.assert_allclose(g_box, box, atol=0.05)
        assert np.abs(g_image.astype(int) - image).max() <= 2  # same crop (float noise of batching aside)
    info, ref_info = read_dataset_info(beam_out), read_dataset_info(ref_out)
    for key in ("num_classes", "class_names", "num_examples", "examples_per_class", "image_size", "alignment"):
        assert info[key] == ref_info[key], key
    assert info["shards"] == ["data-00000-of-00002.tfrecord", "data-00001-of-00002.tfrecord"]
    assert info["failures"] == {"corrupt": 1, "no_face": 1}
    with open(os.path.join(beam_out, "failures.jsonl")) as f:
        failures = {json.loads(line)["path"]: json.loads(line)["reason"] for line in f}
    assert failures == {os.path.join(raw, "angelina", "corrupt.jpg"): "corrupt",
                        os.path.join(raw, "couple", "blank.png"): "no_face"}


class _FailsOnSize:
    """The real detector, except that it raises on photos of one width (a worker crash)."""

    def __init__(self, detector, width):
        self.detector, self.width = detector, width

    def detect(self, images):
        if any(image.shape[1] == self.width for image in images):
            raise RuntimeError("detector crashed")
        return self.detector.detect(images)


def test_a_failing_photo_is_reported_and_loses_no_other(raw, detector):
    paths = [os.path.join(raw, "angelina", "img1.jpg"), os.path.join(raw, "angelina", "img2.jpg"),
             os.path.join(raw, "couple", "img3.jpg")]
    width = cv2.imread(paths[1]).shape[1]
    assert all(cv2.imread(p).shape[1] != width for p in (paths[0], paths[2]))
    fn = AlignDoFn("arcface", None, 44, False, 20, 4, detector=_FailsOnSize(detector, width))
    fn.setup()
    outputs = list(fn.process(paths, classes=["angelina", "couple"]))
    examples = [tf.train.Example.FromString(o) for o in outputs if isinstance(o, bytes)]
    failures = [json.loads(o.value) for o in outputs if not isinstance(o, bytes)]
    assert sorted(e.features.feature["image/source_id"].bytes_list.value[0].decode() for e in examples) == [
        paths[0], paths[2]]
    assert [e.features.feature["image/class/label"].int64_list.value[0] for e in examples] in ([0, 1], [1, 0])
    assert failures == [{"path": paths[1], "reason": "error: RuntimeError: detector crashed"}]


def test_cli_reports_an_empty_pattern(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-m", "tfface_align.beam_align", f"--input_pattern={tmp_path}/*/*.jpg",
                          f"--output_dir={tmp_path / 'out'}", "--runner=DirectRunner", "--direct_num_workers=1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: --input_pattern: no file matches '{tmp_path}/*/*.jpg'"

"""``python -m tfface.export --pretrained dlib_resnet_v1``: its stated threshold, verification of real
photos through ``validate_on_lfw --align`` (tfface's MTCNN cutting dlib chips, told by the export's
metadata), and a facebank naming real people with it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfface.importers.dlib_resnet import THRESHOLD_CHECK
from tfface.recognition.facebank import FaceBank, model_threshold
from tfface.recognition.inference import load_embedder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_FACES = os.path.join(ROOT, "demo", "faces")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def export(dlib_model_path, tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("pretrained")
    _run("tfface.export", "--pretrained=dlib_resnet_v1", f"--export_dir={base}", "--model_name=dlib")
    return str(base / "dlib" / "1")


def test_export_records_alignment_source_and_threshold(export, dlib_model_path):
    with open(os.path.join(export, "assets.extra", "tfface.json")) as f:
        meta = json.load(f)
    with open(os.path.join(export, "threshold.json")) as f:
        threshold = json.load(f)
    assert meta["alignment"] == {"align": "dlib", "image_size": [150, 150], "margin": 0.0}
    assert meta["source"]["file"] == os.path.abspath(dlib_model_path) and "CC0" in meta["source"]["licence"]
    assert threshold["fingerprint"] == meta["fingerprint"] and threshold["distance_metric"] == 0
    assert threshold["value"] == pytest.approx((0.6 / 1.52) ** 2, abs=1e-4) and "0.60" in threshold["calibrated_on"]


@pytest.mark.slow
def test_verifies_real_photos_with_validate_on_lfw_align(export, faces_dir, tmp_path):
    out = tmp_path / "result.json"
    _run("tfface.validate_on_lfw", faces_dir, export, "--align", f"--lfw_pairs={os.path.join(faces_dir, 'pairs.csv')}",
         f"--output_json={out}")
    result = next(iter(json.loads(out.read_text())["results"].values()))
    assert result["num_pairs"] == THRESHOLD_CHECK["num_pairs"] and result["accuracy"] >= 0.99
    # the far/tar the export's threshold.json states are what its value gives on these pairs
    distances, same = np.array(result["pairs"]["distance"]), np.array(result["pairs"]["issame"], bool)
    with open(os.path.join(export, "threshold.json")) as f:
        value = json.load(f)["value"]
    assert np.mean(distances[same] <= value) == THRESHOLD_CHECK["tar"]
    assert np.mean(distances[~same] <= value) == THRESHOLD_CHECK["far"]


@pytest.mark.slow
def test_facebank_names_real_people(export, tmp_path):
    if not os.path.isdir(DEMO_FACES):
        pytest.skip(f"{DEMO_FACES} not found")
    people = {"a": ("img1.jpg", "img2.jpg"), "b": ("img13.jpg", "img14.jpg"), "c": ("img18.jpg", "img19.jpg"),
              "d": ("img8.jpg", "img9.jpg")}
    for name, (enrol, _) in people.items():
        os.makedirs(tmp_path / "bank" / name)
        shutil.copy(os.path.join(DEMO_FACES, enrol), tmp_path / "bank" / name)
    embedder = load_embedder(export)
    bank, _ = FaceBank.build(str(tmp_path / "bank"), embedder)
    threshold, metric, _ = model_threshold(embedder)
    probes = [os.path.join(DEMO_FACES, probe) for _, probe in people.values()] + [os.path.join(DEMO_FACES, "img20.jpg")]
    names, _ = bank.identify(embedder.embed_files(probes, align=True), threshold, metric)
    assert names == [*people, "Unknown"]

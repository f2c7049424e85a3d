import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tfface.evaluation import bins, evaluate
from tfface.evaluation.benchmarks import evaluate_bin, table
from tfface.evaluation.embeddings import flip_sum
from tfface.evaluation.thresholds import load_threshold
from tfface.recognition.inference import load_embedder

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def faces_bin(face_crops, face_pairs, tmp_path_factory) -> str:
    """All labelled pairs of the real photos as an InsightFace .bin (64x64 JPEG crops)."""
    path = str(tmp_path_factory.mktemp("bins") / "faces.bin")
    bins.write_bin(path, [face_crops[name] for a, b, _ in face_pairs for name in (a, b)], [s for *_, s in face_pairs])
    return path


def _reference_flip_tta(embed, faces):
    """InsightFace's flip TTA restated in float64: e(x) + e(mirror(x)), divided by its norm."""
    total = embed(faces).astype(np.float64) + embed(faces[:, :, ::-1].copy()).astype(np.float64)
    return total / np.sqrt((total ** 2).sum(axis=1, keepdims=True))


def test_flip_tta_matches_numpy_reference(exported_model, faces_bin):
    embedder = load_embedder(exported_model)
    bin_set = bins.load_bin(faces_bin, embedder.image_size)
    bench = evaluate_bin(embedder.embed, bin_set, batch_size=64, flip=True)
    expected = _reference_flip_tta(embedder.embed, bin_set.images)
    reference = evaluate(expected, bin_set.issame)
    np.testing.assert_allclose(bench.result.accuracy, reference.accuracy)
    np.testing.assert_allclose(bench.result.distances, reference.distances, atol=1e-6)
    plain = evaluate(embedder.embed(bin_set.images), bin_set.issame)
    np.testing.assert_allclose(bench.plain.distances, plain.distances, atol=1e-6)
    assert not np.allclose(bench.result.distances, bench.plain.distances)  # the mirror changed something
    assert bench.result.issame.size == len(bin_set.issame) == 300 and bench.skipped_pairs == 0
    assert table({"faces": bench})[-1].startswith("[faces]Accuracy-Flip: ")


def test_flip_sum_of_a_linear_embedder():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    out = flip_sum(a, b)
    for i in range(5):
        s = a[i] + b[i]
        np.testing.assert_allclose(out[i], s / np.linalg.norm(s))


def test_validate_on_bins_end_to_end(exported_model, faces_bin, tmp_path):
    bins_dir = os.path.dirname(faces_bin)
    report, plot = tmp_path / "out" / "faces.json", tmp_path / "roc.png"
    proc = subprocess.run(
        [sys.executable, "-m", "tfface.validate_on_bins", exported_model, f"--bins_dir={bins_dir}", "--targets=faces",
         f"--output_json={report}", f"--roc_plot={plot}", "--save_threshold", "--batch_size=128"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    faces = data["results"]["faces"]
    assert data["fingerprint"] == load_embedder(exported_model).fingerprint and data["settings"]["flip"] is True
    assert faces["num_pairs"] == 300 and len(faces["pairs"]["distance"]) == 300 and sum(faces["pairs"]["issame"]) == 38
    assert len(faces["folds"]) == 10 and len(faces["roc"]["fpr"]) == len(faces["roc"]["thresholds"]) == 400
    assert faces["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in faces["folds"]]))
    png = cv2.imread(str(plot))
    assert png is not None and png.shape[0] > 300 and png.shape[1] > 600 and png.std() > 10
    threshold = load_threshold(exported_model, load_embedder(exported_model).fingerprint)
    assert threshold.calibrated_on == "faces.bin" and threshold.num_pairs == 300 and threshold.distance_metric == 0
    assert 0.0 <= threshold.far <= 1.0 and 0.0 <= threshold.tar <= 1.0
    os.remove(os.path.join(exported_model, "threshold.json"))

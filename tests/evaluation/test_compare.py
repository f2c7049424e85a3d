import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tfface.evaluation.comparison import compare_embeddings
from tfface.evaluation.thresholds import Threshold, save_threshold
from tfface.recognition.inference import load_embedder

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def test_distance_matrix_and_decisions_against_numpy():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[2] = np.nan  # no face in the third photo
    threshold = Threshold(0, 1.5, 0.01, 0.9, "lfw.bin", 6000, "f")
    result = compare_embeddings(["a", "b", "c", "d"], emb, threshold)
    faces = emb[[0, 1, 3]]
    expected = ((faces[:, None] - faces[None]) ** 2).sum(-1)
    np.testing.assert_allclose(result.distances, expected, atol=1e-12)
    assert result.compared == ["a", "b", "d"] and result.found.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(result.same(), expected <= 1.5)
    angular = compare_embeddings(["a", "b", "c", "d"], emb, None, distance_metric=1)
    np.testing.assert_allclose(angular.distances, np.arccos(np.clip(faces @ faces.T, -1, 1)) / np.pi, atol=1e-6)
    assert angular.distance_metric == 1 and angular.threshold is None


def test_compare_cli_detects_aligns_and_decides_on_real_photos(exported_model, faces_dir, tmp_path):
    paths = [os.path.join(faces_dir, n) for n in ("img1.jpg", "img2.jpg", "img20.jpg")] + [str(tmp_path / "wall.png")]
    cv2.imwrite(paths[3], np.full((120, 160, 3), 128, np.uint8))  # a photo without a face
    embedder = load_embedder(exported_model)
    emb = embedder.embed_files(paths, align=True).astype(np.float64)
    assert np.isnan(emb[3]).all() and not np.isnan(emb[:3]).any()
    expected = ((emb[:3, None] - emb[None, :3]) ** 2).sum(-1)
    value = float((expected[0, 1] + expected[0, 2]) / 2)  # between img1's two distances: one same, one different
    save_threshold(Threshold(0, value, 0.0, 1.0, "test", 2, embedder.fingerprint), embedder.path)
    try:
        proc = subprocess.run([sys.executable, "-m", "tfface.compare", exported_model, *paths,
                               "--annotate", str(tmp_path / "sheet.png")],
                              capture_output=True, text=True, env=ENV, timeout=600)
    finally:
        os.remove(os.path.join(embedder.path, "threshold.json"))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line[:1].isdigit() and ":" not in line]
    np.testing.assert_allclose(np.array([[float(v) for v in row[1:]] for row in rows]), expected, atol=2e-4)
    verdicts = {line.split(":")[0]: line.split()[-1] for line in proc.stdout.splitlines() if " vs " in line}
    closer = "same" if expected[0, 1] <= value else "different"
    assert verdicts["img1.jpg vs img2.jpg"] == closer and verdicts["img1.jpg vs img20.jpg"] != closer
    assert f"No face found in 1 photo(s): {paths[3]}" in proc.stdout
    sheet = cv2.imread(str(tmp_path / "sheet.png"))  # the photos side by side, 240 px high, faces boxed
    widths = [round(cv2.imread(p).shape[1] * 240 / cv2.imread(p).shape[0]) for p in paths]
    assert sheet.shape == (240, sum(widths) + 4 * (len(paths) - 1), 3)
    green, red = (np.abs(sheet.astype(int) - c).sum(axis=2) < 30 for c in ((0, 200, 0), (0, 0, 255)))
    assert green.sum() > 100 and red.sum() > 100  # one same (green box), one different (red), a "no face" label

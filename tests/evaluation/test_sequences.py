import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tfface.core import images
from tfface.core.errors import UserError
from tfface.evaluation.sequences import aggregate, evaluate_sequences, read_splits
from tfface.recognition.inference import load_embedder

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
OFFSETS = ((0, 0), (8, 0), (0, 8), (4, 4))  # a face drifting in the frame, as in a video


@pytest.fixture(scope="module")
def ytf(face_crops, face_pairs, tmp_path_factory):
    """Every photo as a 4-frame sequence '<photo>/0'; the labelled pairs in 10 round-robin splits."""
    root = tmp_path_factory.mktemp("ytf")
    for name, jpeg in face_crops.items():
        crop = images.load(jpeg)
        folder = root / name.split(".")[0] / "0"
        folder.mkdir(parents=True)
        for k, (dy, dx) in enumerate(OFFSETS):
            cv2.imwrite(str(folder / f"frame_{k}.png"), crop[dy:dy + 56, dx:dx + 56, ::-1])
    lines = ["split number, first name, second name, first length, second length, is same"]
    for i, (a, b, same) in enumerate(face_pairs):
        lines.append(f"{i % 10 + 1}, {a.split('.')[0]}/0, {b.split('.')[0]}/0, 4, 4, {int(same)}")
    (root / "splits.txt").write_text("\n".join(lines) + "\n")
    return root


def _reference(embed, root, image_size):
    """Set-to-set protocol restated with loops: mean of normalised frame embeddings, per-split CV."""
    rows = [line.split(", ") for line in (root / "splits.txt").read_text().splitlines()[1:]]
    split = np.array([int(r[0]) for r in rows])
    issame = np.array([r[-1] == "1" for r in rows])

    def sequence(name):
        folder = root / name
        frames = np.stack([images.load(str(folder / f), image_size) for f in sorted(os.listdir(folder))])
        e = embed(frames).astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        m = e.mean(axis=0)
        return m / np.linalg.norm(m)

    cache = {}
    dist = np.array([np.sum((cache.setdefault(r[1], sequence(r[1])) - cache.setdefault(r[2], sequence(r[2]))) ** 2)
                     for r in rows])
    accuracy = []
    for s in range(1, 11):
        train, test = split != s, split == s
        scores = [np.mean((dist[train] < t) == issame[train]) for t in np.arange(0, 4, 0.01)]
        best = np.arange(0, 4, 0.01)[int(np.argmax(scores))]
        accuracy.append(np.mean((dist[test] < best) == issame[test]))
    return np.array(accuracy), dist


def test_set_to_set_matches_numpy_reference(exported_model, ytf):
    embedder = load_embedder(exported_model)
    result = evaluate_sequences(embedder.embed, str(ytf), str(ytf / "splits.txt"), embedder.image_size)
    accuracy, dist = _reference(embedder.embed, ytf, embedder.image_size)
    np.testing.assert_allclose(result.distances, dist, atol=1e-6)
    np.testing.assert_allclose(result.accuracy, accuracy)
    assert result.accuracy.shape == (10,) and result.issame.size == 300


def test_aggregations():
    frames = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    np.testing.assert_allclose(aggregate(frames, "mean"), np.array([1, 2]) / np.sqrt(5))
    np.testing.assert_allclose(aggregate(frames, "median"), [0.0, 1.0])
    with pytest.raises(UserError, match="aggregation: expected one of"):
        aggregate(frames, "max")


def test_splits_guards(ytf, tmp_path):
    path = tmp_path / "splits.txt"
    path.write_text("1, a/0, b/0, 1\n1, a/0, c/0, 0\n2, a/0, b/0, 1\n")
    with pytest.raises(UserError, match=r"unequal pair counts \{1: 2, 2: 1\}"):
        read_splits(str(path))
    path.write_text("1, a/0, b/0, 1\n2, a/0, b/0, yes\n")
    with pytest.raises(UserError, match="line 2 of .* is not 'split, first name"):
        read_splits(str(path))
    path.write_text("1, a/0, b/0, 1\n1, a/0, c/0, 0\n")
    with pytest.raises(UserError, match="has 1 split"):
        read_splits(str(path))
    path.write_text("1, img1/0, nobody/0, 0\n2, img1/0, img2/0, 1\n")
    with pytest.raises(UserError, match="1 sequence\\(s\\) of the splits file have no frames .*nobody/0"):
        evaluate_sequences(lambda x: x, str(ytf), str(path), (32, 32))


def test_validate_on_sequences_cli(exported_model, ytf, tmp_path):
    report = tmp_path / "ytf.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tfface.validate_on_sequences", str(ytf), exported_model, "--frames_per_sequence=2",
         "--aggregation=median", f"--output_json={report}"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    embedder = load_embedder(exported_model)
    expected = evaluate_sequences(embedder.embed, str(ytf), str(ytf / "splits.txt"), embedder.image_size, "median", 2)
    result = json.loads(report.read_text())["results"][ytf.name]
    assert [f["accuracy"] for f in result["folds"]] == pytest.approx(expected.accuracy.tolist())
    assert result["pairs"]["distance"] == pytest.approx(expected.distances.tolist(), abs=1e-5)

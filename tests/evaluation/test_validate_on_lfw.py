import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.evaluation import evaluate, evaluate_pairs, read_pairs
from tfface.evaluation.thresholds import load_threshold
from tfface.recognition.inference import load_embedder

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _lfw_layout(root, face_pairs, face_crops, count):
    """The first ``count`` labelled pairs as LFW: identities from the 'same' pairs, pairs.txt."""
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b, same in face_pairs:
        if same:
            parent[find(a)] = find(b)
    index = {}
    for name in sorted(face_crops):
        person = "P" + find(name).split(".")[0]
        index[name] = (person, sum(1 for p, _ in index.values() if p == person) + 1)
        os.makedirs(root / person, exist_ok=True)
        (root / person / f"{person}_{index[name][1]:04d}.jpg").write_bytes(face_crops[name])
    lines = [str(count)]
    for a, b, same in face_pairs[:count]:
        (pa, ia), (pb, ib) = index[a], index[b]
        lines.append(f"{pa}\t{ia}\t{ib}" if same else f"{pa}\t{ia}\t{pb}\t{ib}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")


def test_outputs_and_threshold_of_a_real_run(exported_model, face_pairs, face_crops, tmp_path):
    lfw = tmp_path / "lfw"
    _lfw_layout(lfw, face_pairs, face_crops, 120)
    report, plot = tmp_path / "lfw.json", tmp_path / "lfw.png"
    proc = subprocess.run(
        [sys.executable, "-m", "tfface.validate_on_lfw", str(lfw), exported_model, f"--output_json={report}",
         f"--roc_plot={plot}", "--save_threshold"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    embedder = load_embedder(exported_model)
    expected = evaluate_pairs(embedder.embed, str(lfw), str(lfw / "pairs.txt"), embedder.image_size)
    result = json.loads(report.read_text())["results"]["lfw"]
    assert result["num_pairs"] == 120 and sum(result["pairs"]["issame"]) == sum(s for *_, s in face_pairs[:120])
    assert [f["accuracy"] for f in result["folds"]] == pytest.approx(expected.accuracy.tolist())
    assert result["pairs"]["distance"] == pytest.approx(expected.distances.tolist(), abs=1e-5)
    assert cv2.imread(str(plot)) is not None
    threshold = load_threshold(exported_model, embedder.fingerprint)
    assert threshold.calibrated_on == "pairs.txt" and threshold.value == pytest.approx(expected.threshold)
    os.remove(os.path.join(exported_model, "threshold.json"))


def test_pairs_file_shorter_than_its_header(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nBob\t1\t2\n")
    with pytest.raises(UserError, match="announces 2 folds of 1 same \\+ 1 different pairs \\(4 lines\\).* has 3"):
        read_pairs(str(path))


def test_fewer_pairs_than_folds():
    with pytest.raises(UserError, match="nrof_folds=10 needs at least as many pairs, got 5"):
        evaluate(np.ones((10, 3)), np.zeros(5, bool))

"""validate_on_ijb end to end: a real export on the synthetic mini-release, killed mid-way and
resumed, with JSON, ROC plot and a FAR threshold the facebank reads back."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.evaluation.ijb import PLAIN, ReleaseEmbeddings, aligned_face, alignment_of, embed_release, \
    evaluate_release
from tfface.evaluation.ijb_release import read_release
from tfface.recognition.facebank import model_threshold
from tfface.recognition.inference import load_embedder

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _command(root, model, cache, *flags):
    return [sys.executable, "-m", "tfface.validate_on_ijb", root, model, "--dataset=IJBC", f"--cache_dir={cache}",
            "--cache_chunk=200", "--batch_size=100", *flags]


@pytest.mark.slow
def test_killed_run_resumes_and_reports_every_variant(ijb_mini, exported_model, tmp_path):
    root, _ = ijb_mini
    model = str(tmp_path / "model")
    shutil.copytree(exported_model, model)  # the threshold is written next to it
    cache = tmp_path / "cache"
    proc = subprocess.Popen(_command(root, model, str(cache)), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(cache.glob("*/chunk-000001.npy")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [folder] = list(cache.iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("chunk-*.npy")}
    assert 2 <= len(before) < 10, "the run should have been killed after 2 of 10 chunks"

    report, plot = tmp_path / "ijb.json", tmp_path / "roc.png"
    out = subprocess.run(_command(root, model, str(cache), f"--output_json={report}", f"--roc_plot={plot}",
                                  "--save_threshold", "--far=1e-3"),
                         env=ENV, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("chunk-*.npy")}
    assert len(after) == 10 and all(after[name] == mtime for name, mtime in before.items())  # kept, not redone

    # the cached rows are the model's embeddings of the aligned faces (checked on a few photos)
    embedder, release = load_embedder(model), read_release(root, "IJBC")
    stored = np.concatenate([np.load(folder / f"chunk-{i:06d}.npy") for i in range(10)])
    kind, size = alignment_of(embedder)
    picks = [0, 399, 1999]
    faces = np.stack([aligned_face(release.image_path(release.images[i]), release.landmarks[i], kind, size)
                      for i in picks])
    assert np.abs(stored[picks, 0] - embedder.embed_faces(faces)).max() <= 1e-5
    assert np.abs(stored[picks, 1] - embedder.embed_faces(np.ascontiguousarray(faces[:, :, ::-1]))).max() <= 1e-5

    expected = evaluate_release(release, ReleaseEmbeddings(stored[:, 0], stored[:, 1], []),
                                fars=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1))
    data = json.loads(report.read_text())
    variants = data["results"]["variants"]
    assert sorted(variants) == sorted(r.variant.name for r in expected.variants) and len(variants) == 8
    for r in expected.variants:
        got = variants[r.variant.name]
        assert got["verification"]["nearest_tar"] == pytest.approx(r.verification.nearest_tar.tolist())
        assert got["verification"]["strict_tar"] == pytest.approx(r.verification.strict_tar.tolist())
        assert got["identification"]["G1"]["cmc"] == pytest.approx(r.identification["G1"].cmc.tolist())
        assert got["identification"]["G2"]["tpir"] == pytest.approx(r.identification["G2"].tpir.tolist(), nan_ok=True)
    assert data["results"]["counts"]["faces_unreadable"] == 0 and data["fingerprint"] == embedder.fingerprint
    assert "| IJBC NDF |" in out.stdout and "TPIR@FPIR=0.01" in out.stdout
    assert cv2.imread(str(plot)) is not None

    value, metric, source = model_threshold(embedder)  # what the facebank, compare and classifier read
    plain = next(r for r in expected.variants if r.variant == PLAIN).verification
    k = plain.fars.index(1e-3)
    assert metric == 0 and source.endswith("threshold.json")
    assert value == pytest.approx(2 - 2 * plain.strict_threshold[k]) and plain.strict_far[k] <= 1e-3


def test_a_model_without_alignment_is_refused(ijb_mini, exported_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(exported_model, model)
    meta = model / "assets.extra" / "tfface.json"
    data = json.loads(meta.read_text())
    data.pop("alignment")
    meta.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"trained on faces of unknown alignment") as error:
        embed_release(load_embedder(str(model)), read_release(ijb_mini[0], "IJBC"), str(tmp_path / "cache"))
    assert "\n" not in str(error.value) and not (tmp_path / "cache").exists()

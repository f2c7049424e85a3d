"""InsightFace-family importers: real-format files round-trip exactly (512-d outputs within 1e-4 of
each format's own runtime on real aligned faces), and files that do not fit are refused in one line."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile

import keras
import numpy as np
import onnxruntime
import pytest
import torch

from tests.importers import writers
from tests.importers.insightface_files import aligned, nchw, sources  # noqa: F401  (fixtures)
from tfface import importers, models
from tfface.core.errors import UserError
from tfface.export import META_FILE, tflite
from tfface.importers import pth
from tfface.recognition.inference import load_embedder
from tfface.training.warm_start import load_backbone_weights

TOLERANCE = 1e-4


def _embed(imported, faces) -> np.ndarray:
    return keras.ops.convert_to_numpy(imported.embedder(faces.astype(np.float32), training=False))


@pytest.mark.parametrize("arch", ["iresnet18", "ir_se_50", "mobilefacenet"])
def test_pth_matches_pytorch(arch, sources, aligned):
    source = sources[f"pth:{arch}"]
    imported = importers.import_file(source.path)  # the architecture is told from the keys
    diff = np.abs(_embed(imported, aligned) - source.expected).max()
    print(f"\n| .pth | {arch} | {diff:.2e} |")
    assert diff <= TOLERANCE
    meta = imported.source
    assert meta["arch"] == arch and meta["format"] == "pth" and meta["standardization"] == "minus_one_to_one"
    assert meta["channel_order"] == ("RGB" if arch == "iresnet18" else "BGR") and meta["input_channel_order"] == "RGB"
    assert meta["sha256"] == importers.file_sha256(source.path) and "never shipped" in meta["licence"]
    assert ("non-commercial" in meta["licence"]) == arch.startswith("iresnet")  # the InsightFace zoo's terms
    assert imported.alignment == {"align": "arcface", "image_size": [112, 112], "margin": 0.0}
    keras.backend.clear_session()


@pytest.mark.parametrize("form", ["unfolded", "folded_preamble"])
def test_onnx_matches_onnxruntime(form, sources, aligned):
    source = sources[f"onnx:{form}"]
    preamble = form.endswith("preamble")
    feed = nchw(aligned, mean=0.0, std=1.0) if preamble else nchw(aligned)  # raw pixels into the preamble
    expected = onnxruntime.InferenceSession(source.path).run(None, {"data": feed.numpy()})[0]
    imported = importers.import_file(source.path)
    diff = np.abs(_embed(imported, aligned) - expected).max()
    print(f"\n| ONNX {form} | iresnet18 | {diff:.2e} |")
    assert diff <= TOLERANCE
    assert imported.source["arch"] == "iresnet18" and imported.source["preamble"] is preamble
    assert imported.source["standardization"] == ("fixed_image_standardization" if preamble else "minus_one_to_one")
    keras.backend.clear_session()


def test_mxnet_params_match_pytorch_forward(sources, aligned):
    """fresnet names, eps 2e-5 and a junk fc1 gamma (fix_gamma) against the same weights in PyTorch."""
    source = sources["mxnet"]
    imported = importers.import_file(source.path)
    diff = np.abs(_embed(imported, aligned) - source.expected).max()
    print(f"\n| MXNet .params | iresnet18 | {diff:.2e} |")
    assert diff <= TOLERANCE
    assert imported.source["standardization"] == "fixed_image_standardization"
    assert imported.source["symbol"] == "model-symbol.json"
    keras.backend.clear_session()


def test_tensor_only_reader_matches_torch(sources, tmp_path):
    """The reader used without torch gives torch's tensors (float32 and half, 'module.' prefixes)."""
    state = torch.load(sources["pth:mobilefacenet"].path, weights_only=True)
    np.testing.assert_array_equal(
        pth.read_zip_state_dict(sources["pth:mobilefacenet"].path)["conv_4.model.3.conv_dw.conv.weight"],
        state["conv_4.model.3.conv_dw.conv.weight"].numpy())
    wrapped = {f"module.{k}": v.half() for k, v in state.items() if v.is_floating_point()}
    path = tmp_path / "half.pth"
    torch.save({"state_dict": wrapped}, path)
    read = pth.read_zip_state_dict(str(path))
    assert set(read) == {k.removeprefix("module.") for k in wrapped}
    np.testing.assert_array_equal(read["linear.weight"], state["linear.weight"].half().numpy())


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _hostile(good_path: str, tmp_path, marker) -> str:
    """A copy of a good .pth whose pickle calls ``os.system`` (it would touch ``marker``)."""
    path = tmp_path / "hostile.pth"
    with zipfile.ZipFile(good_path) as good, zipfile.ZipFile(path, "w") as bad:
        for name in good.namelist():
            data = pickle.dumps({"conv1.weight": _Exploit(str(marker))}, 2) if name.endswith("data.pkl") else good.read(name)
            bad.writestr(name, data)
    return str(path)


def test_hostile_pickle_is_refused_without_running(sources, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = _hostile(sources["pth:iresnet18"].path, tmp_path, marker)
    with pytest.raises(UserError, match="not a readable PyTorch state dict"):
        importers.import_file(str(path))  # torch.load(weights_only=True)
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        pth.read_zip_state_dict(str(path))  # the reader used without torch
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # as if torch were not installed
    with pytest.raises(UserError, match="refusing to load"):
        importers.import_file(str(path))
    assert not marker.exists()


def _truncated(path: str, tmp_path, suffix: str) -> str:
    data = open(path, "rb").read()
    out = tmp_path / f"truncated{suffix}"
    out.write_bytes(data[: len(data) // 2])
    return str(out)


def test_refusals(sources, tmp_path):
    r18 = sources["pth:iresnet18"].path
    cases = [
        (dict(path=r18, arch="iresnet34"), r"tensor 'layer1\.2\.bn1\.weight' of iresnet34 is missing"),
        (dict(path=sources["pth:ir_se_50"].path, arch="iresnet18"), "tensor 'conv1.weight' of iresnet18 is missing"),
        (dict(path=r18, arch="resnet9"), r"--arch: expected one of \[.*'iresnet18'"),
        (dict(path=_truncated(r18, tmp_path, ".pth")), "not a readable PyTorch state dict"),
        (dict(path=sources["onnx:unfolded"].path, arch="iresnet34"), "iresnet34"),
        (dict(path=_truncated(sources["onnx:unfolded"].path, tmp_path, ".onnx")), "truncated.onnx"),
        (dict(path=sources["mxnet"].path, arch="mobilefacenet"), "--arch: MXNet fresnet files map onto iresnet"),
    ]
    params = _truncated(sources["mxnet"].path, tmp_path, "-0000.params")
    os.link(sources["mxnet"].path.replace("-0000.params", "-symbol.json"), str(tmp_path / "truncated-symbol.json"))
    cases.append((dict(path=params), "truncated at byte"))
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, other)
    cases.append((dict(path=str(other)), "not those of an InsightFace network"))
    elu = tmp_path / "elu.onnx"
    writers.write_onnx(sources["pth:iresnet18"].net, str(elu), folded=True, extra_op="Elu")
    cases.append((dict(path=str(elu)), "ONNX op.* tfface does not map: Elu"))
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message) as err:
            importers.import_file(kwargs.pop("path"), **kwargs)
        assert "\n" not in str(err.value)
    keras.backend.clear_session()


PAIRS = [("img20", "img21", "Yes"), ("img16", "img17", "Yes"), ("img5", "img10", "Yes"), ("img5", "img11", "Yes"),
         ("img10", "img11", "Yes"), ("img20", "img16", "No"), ("img20", "img17", "No"), ("img21", "img12", "No"),
         ("img20", "img25", "No"), ("img21", "img5", "No")]


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_import_export_validate_and_warm_start(sources, aligned, faces_dir, tmp_path):
    """``.pth`` -> ``python -m tfface.export --import`` (TFLite files, TF1-loader check) ->
    ``validate_on_lfw --align`` on real photos, and a warm start from the export."""
    source = sources["pth:iresnet18"]
    models_dir = tmp_path / "models"
    done = _cli("tfface.export", "--import", source.path, "--export_dir", str(models_dir), "--model_name", "r18",
                "--tflite", "--check")
    assert done.returncode == 0, done.stderr[-3000:]
    version = str(models_dir / "r18" / "1")
    meta = json.load(open(os.path.join(version, META_FILE)))
    assert meta["source"]["sha256"] == importers.file_sha256(source.path) and meta["source"]["arch"] == "iresnet18"
    assert "non-commercial" in meta["source"]["licence"] and meta["standardization"] == "minus_one_to_one"
    assert meta["alignment"] == {"align": "arcface", "image_size": [112, 112], "margin": 0.0}
    expected = source.expected / np.linalg.norm(source.expected, axis=1, keepdims=True)
    served = load_embedder(version)
    assert np.abs(served.embed(aligned) - expected).max() <= TOLERANCE
    cosines = {q: float((tflite.run_tflite(os.path.join(version, tflite.TFLITE_DIR, name), aligned) * expected)
                        .sum(1).min()) for q, name in tflite.FILES.items()}
    print(f"\nTFLite cosines (iresnet18 .pth import): {cosines}")
    assert cosines["float32"] >= 0.9999 and cosines["int8"] >= 0.99

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("file_x,file_y,Decision\n" + "".join(
        f"{os.path.join(faces_dir, a)}.jpg,{os.path.join(faces_dir, b)}.jpg,{same}\n" for a, b, same in PAIRS))
    report = tmp_path / "lfw.json"
    done = _cli("tfface.validate_on_lfw", faces_dir, version, "--align", f"--lfw_pairs={pairs}", "--lfw_nrof_folds=2",
                f"--output_json={report}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.load(open(report))
    assert result["fingerprint"] == meta["fingerprint"]
    assert next(iter(result["results"].values()))["num_pairs"] == len(PAIRS)

    # train_softmax --pretrained_model <export> starts its backbone here (tfface.training.warm_start)
    fresh = models.build_embedder("iresnet18", (112, 112), 512, "minus_one_to_one")
    load_backbone_weights(fresh, version)
    restored = keras.ops.convert_to_numpy(fresh(aligned.astype(np.float32), training=False))
    assert np.abs(restored - source.expected).max() <= TOLERANCE
    with pytest.raises(UserError, match="does not fit this backbone .'conv1_conv/kernel' missing"):
        load_backbone_weights(models.build_embedder("mobilefacenet", (112, 112), 512, "minus_one_to_one"), version)


def test_cli_refuses_a_hostile_file_without_writing(sources, tmp_path):
    path = _hostile(sources["pth:iresnet18"].path, tmp_path, tmp_path / "pwned")
    done = _cli("tfface.export", "--import", str(path), "--export_dir", str(tmp_path / "models"), "--model_name", "x")
    assert done.returncode == 2 and not (tmp_path / "pwned").exists() and not (tmp_path / "models" / "x").exists()
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: --import '{path}': not a readable PyTorch state dict")

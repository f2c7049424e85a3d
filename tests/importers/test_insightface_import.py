"""InsightFace-family importers: real-format files round-trip exactly (512-d outputs within 1e-4 of
each format's own runtime on real aligned faces), and files that do not fit are refused in one line."""
from __future__ import annotations

import os
import pickle
import zipfile

import keras
import numpy as np
import onnxruntime
import pytest
import torch

from tests.importers import writers
from tests.importers.conftest import nchw
from tfface import importers
from tfface.core.errors import UserError
from tfface.importers import pth

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


def test_hostile_pickle_is_refused_without_running(sources, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    with zipfile.ZipFile(sources["pth:iresnet18"].path) as good, zipfile.ZipFile(path, "w") as bad:
        for name in good.namelist():
            data = good.read(name)
            if name.endswith("data.pkl"):
                data = pickle.dumps({"conv1.weight": _Exploit(str(marker))}, protocol=2)
            bad.writestr(name, data)
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

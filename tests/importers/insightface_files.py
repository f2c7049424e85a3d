"""Fixtures of the InsightFace-family importer tests: weight files written by the tests (seeded
random weights, real formats) and the PyTorch reference nets they come from."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_export_tflite import aligned  # noqa: F401  (fixture: ArcFace-aligned real faces, uint8)

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from tests.importers import torch_nets, writers  # noqa: E402


def nchw(pixels: np.ndarray, mean: float = 127.5, std: float = 127.5, bgr: bool = False):
    """uint8 faces (B, H, W, 3) as the reference nets' standardised N,C,H,W input."""
    x = (pixels.astype(np.float32) - mean) / std
    x = x[..., ::-1] if bgr else x
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class Source:
    """A reference net, the file written from it and its expected 512-d outputs on the faces."""

    def __init__(self, net, path: str, expected: np.ndarray):
        self.net, self.path, self.expected = net, path, expected


def _reference(net, faces, **norm) -> np.ndarray:
    with torch.no_grad():
        return net(nchw(faces, **norm)).numpy()


@pytest.fixture(scope="module")
def sources(aligned, tmp_path_factory) -> dict[str, Source]:
    """``pth:<arch>``, ``onnx:unfolded``, ``onnx:folded_preamble`` and ``mxnet`` sources."""
    out = tmp_path_factory.mktemp("insightface")
    result = {}
    for seed, (arch, net, bgr) in enumerate((("iresnet18", torch_nets.IResNet(18), False),
                                             ("ir_se_50", torch_nets.IRBackbone(se=True), True),
                                             ("mobilefacenet", torch_nets.MobileFaceNet(), True))):
        net = torch_nets.calibrate(torch_nets.randomize(net, seed), nchw(aligned, bgr=bgr))
        path = str(out / f"{arch}.pth")
        torch.save(net.state_dict(), path)
        result[f"pth:{arch}"] = Source(net, path, _reference(net, aligned, bgr=bgr))
    net = result["pth:iresnet18"].net
    for name, folded, preamble in (("unfolded", False, False), ("folded_preamble", True, True)):
        path = str(out / f"r18_{name}.onnx")
        writers.write_onnx(net, path, folded, preamble)
        result[f"onnx:{name}"] = Source(net, path, None)  # expected: onnxruntime, in the test
    mx = torch_nets.randomize(torch_nets.IResNet(18), 7)
    mx = torch_nets.set_eps(torch_nets.calibrate(mx, nchw(aligned, std=128.0)), writers.MX_EPS)
    path = writers.write_mxnet(mx, str(out / "model"))
    result["mxnet"] = Source(mx, path, _reference(mx, aligned, std=128.0))
    return result

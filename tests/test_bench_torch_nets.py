"""The PyTorch twins of bench/train_throughput.py have the Keras backbones' parameter counts."""
import importlib.util
import json
import os

import pytest

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torch_nets():
    spec = importlib.util.spec_from_file_location("torch_nets", os.path.join(ROOT, "bench", "torch_nets.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytorch_twins_match_the_published_parameter_counts():
    nets = _torch_nets()
    with open(os.path.join(ROOT, "tests", "models", "param_counts.json")) as f:
        expected = json.load(f)
    for name, cls in nets.NETS.items():
        net = cls()
        assert nets.parameter_count(net) == expected[name]["total"], name
        assert tuple(net.eval()(torch.zeros(2, 3, 112, 112)).shape) == (2, 512)
    head = nets.ArcFace(512, 10)
    logits, cos = head(torch.nn.functional.normalize(head.kernel.T[:3].detach(), dim=1), torch.tensor([0, 1, 2]))
    # Embeddings on their own class centre: cos 1, so the target logit is s cos(0 + m).
    assert torch.allclose(torch.diagonal(logits[:, :3]), torch.full((3,), 64.0 * torch.cos(torch.tensor(0.5))), atol=1e-3)

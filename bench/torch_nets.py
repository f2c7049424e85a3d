"""PyTorch twins of tfface's MobileFaceNet, IR-SE-50 and ArcFace, for the training benchmark.

Same layers, shapes and parameter counts as ``tfface.models.mobilefacenet`` and
``tfface.models.insightface_ir`` (both follow the InsightFace_Pytorch layout); written for
``bench/train_throughput.py``. ``parameter_count`` counts like Keras: parameters plus BatchNorm
running statistics.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def parameter_count(net: nn.Module) -> int:
    """Parameters plus BatchNorm running mean/variance (Keras' ``count_params``)."""
    stats = sum(b.numel() for name, b in net.named_buffers() if name.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in net.parameters()) + stats


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, prelu: bool = True,
             pad: int | None = None) -> nn.Sequential:
    """Conv (symmetric padding, "same" by default, no bias) -> BN -> optional per-channel PReLU."""
    pad = (kernel - 1) // 2 if pad is None else pad
    layers = [nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.PReLU(cout)] if prelu else []))


class _Bottleneck(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear 1x1 projection (+ identity when ``residual``)."""

    def __init__(self, cin: int, cout: int, groups: int, stride: int, residual: bool):
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            _conv_bn(cin, groups), _conv_bn(groups, groups, 3, stride, groups=groups), _conv_bn(groups, cout, prelu=False)
        )

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """MobileFaceNet (112x112 -> ``embedding_size``), the layout of ``tfface.models.MobileFaceNet``."""

    def __init__(self, embedding_size: int = 512):
        super().__init__()
        stage = lambda c, g, n: [_Bottleneck(c, c, g, 1, True) for _ in range(n)]  # noqa: E731
        self.features = nn.Sequential(
            _conv_bn(3, 64, 3, 2), _conv_bn(64, 64, 3, groups=64),
            _Bottleneck(64, 64, 128, 2, False), *stage(64, 128, 4),
            _Bottleneck(64, 128, 256, 2, False), *stage(128, 256, 6),
            _Bottleneck(128, 128, 512, 2, False), *stage(128, 256, 2),
            _conv_bn(128, 512), _conv_bn(512, 512, 7, groups=512, prelu=False, pad=0),  # global depthwise conv
        )
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x):
        return self.bn(self.linear(torch.flatten(self.features(x), 1)))


class _SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1, bias=False), nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.fc(x)


class _IRUnit(nn.Module):
    """BN -> conv3x3 -> PReLU -> conv3x3/stride -> BN -> SE, plus the (pooled or projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cin == cout:
            self.shortcut = nn.MaxPool2d(1, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), _SqueezeExcitation(cout),
        )

    def forward(self, x):
        return self.shortcut(x) + self.body(x)


class IRSE50(nn.Module):
    """IR-SE-50 (112x112 -> ``embedding_size``), the layout of ``tfface.models.InsightFaceIR(50, se=True)``."""

    def __init__(self, embedding_size: int = 512, dropout: float = 0.0):
        super().__init__()
        units, cin = [], 64
        for cout, count in zip((64, 128, 256, 512), (3, 4, 14, 3)):
            for i in range(count):
                units.append(_IRUnit(cin, cout, 2 if i == 0 else 1))
                cin = cout
        self.input = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.body = nn.Sequential(*units)
        self.output = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(dropout), nn.Flatten(), nn.Linear(512 * 7 * 7, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x):
        return self.output(self.body(self.input(x)))


class ArcFace(nn.Module):
    """ArcFace logits: ``s cos(theta + m)`` at the target, ``s cos(theta)`` elsewhere (as tfface.heads.ArcFace)."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.5):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.xavier_uniform_(self.kernel)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings, labels):
        x = nn.functional.normalize(embeddings, dim=1)
        w = nn.functional.normalize(self.kernel, dim=0)
        cos = (x @ w).clamp(-1.0, 1.0)
        cos_t = cos.gather(1, labels[:, None])[:, 0]
        w_t = w[:, labels].T  # the target angle as 2 atan2(|x - w|, |x + w|), like tfface's heads
        theta_t = 2.0 * torch.atan2((x - w_t).square().sum(1).clamp_min(1e-30).sqrt(),
                                    (x + w_t).square().sum(1).clamp_min(1e-30).sqrt())
        m = self.margin
        target = torch.where(cos_t > math.cos(math.pi - m), torch.cos(theta_t + m), cos_t - m * math.sin(math.pi - m))
        logits = cos.scatter(1, labels[:, None], target[:, None])
        return self.scale * logits, cos


NETS = {"mobilefacenet": MobileFaceNet, "ir_se_50": IRSE50}

"""The InsightFace family in PyTorch, written for the tests from the published architectures
(arcface_torch ``backbones/iresnet.py``; InsightFace_Pytorch ``model.py`` Backbone and
MobileFaceNet): module names give the released state dicts' keys. Parity references only."""
from __future__ import annotations

import torch
from torch import nn


def _conv(cin, cout, k=3, stride=1, pad=1, groups=1):
    return nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False)


class IBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1, self.bn2 = nn.BatchNorm2d(cin), _conv(cin, cout), nn.BatchNorm2d(cout)
        self.prelu, self.conv2, self.bn3 = nn.PReLU(cout), _conv(cout, cout, stride=stride), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride, 0), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """arcface_torch's IResNet (``features`` BN with its weight fixed at 1)."""

    UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}

    def __init__(self, depth: int, size: int = 112):
        super().__init__()
        self.conv1, self.bn1, self.prelu = _conv(3, 64), nn.BatchNorm2d(64), nn.PReLU(64)
        cin = 64
        for stage, (cout, units) in enumerate(zip((64, 128, 256, 512), self.UNITS[depth]), start=1):
            blocks = [IBlock(cin if u == 0 else cout, cout, 2 if u == 0 else 1) for u in range(units)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512 * (size // 16) ** 2, 512)
        self.features = nn.BatchNorm1d(512)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 16, 1, bias=False), nn.Conv2d(c // 16, c, 1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class IRUnit(nn.Module):
    def __init__(self, cin, cout, stride, se):
        super().__init__()
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(_conv(cin, cout, 1, stride, 0), nn.BatchNorm2d(cout))
        parts = [nn.BatchNorm2d(cin), _conv(cin, cout), nn.PReLU(cout), _conv(cout, cout, stride=stride),
                 nn.BatchNorm2d(cout)]
        self.res_layer = nn.Sequential(*parts, *([SE(cout)] if se else []))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """InsightFace_Pytorch ``Backbone(50, drop_ratio, 'ir'|'ir_se')`` (raw embeddings, no l2_norm)."""

    def __init__(self, se: bool = True, units=(3, 4, 14, 3)):
        super().__init__()
        self.input_layer = nn.Sequential(_conv(3, 64), nn.BatchNorm2d(64), nn.PReLU(64))
        body, cin = [], 64
        for cout, n in zip((64, 128, 256, 512), units):
            body += [IRUnit(cin if u == 0 else cout, cout, 2 if u == 0 else 1, se) for u in range(n)]
            cin = cout
        self.body = nn.Sequential(*body)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x):
        return self.output_layer(self.body(self.input_layer(x)))


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k=1, stride=1, pad=0, groups=1, prelu=True):
        super().__init__()
        self.conv, self.bn = _conv(cin, cout, k, stride, pad, groups), nn.BatchNorm2d(cout)
        if prelu:
            self.prelu = nn.PReLU(cout)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.prelu(x) if hasattr(self, "prelu") else x


class DepthWise(nn.Module):
    def __init__(self, cin, cout, groups, stride=2, residual=False):
        super().__init__()
        self.conv = ConvBlock(cin, groups)
        self.conv_dw = ConvBlock(groups, groups, 3, stride, 1, groups)
        self.project = ConvBlock(groups, cout, prelu=False)
        self.residual = residual

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, c, n, groups):
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(c, c, groups, 1, True) for _ in range(n)])

    def forward(self, x):
        return self.model(x)


class MobileFaceNet(nn.Module):
    """InsightFace_Pytorch ``MobileFaceNet(512)`` (raw embeddings, no l2_norm)."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, groups=64)
        self.conv_23, self.conv_3 = DepthWise(64, 64, 128), Residual(64, 4, 128)
        self.conv_34, self.conv_4 = DepthWise(64, 128, 256), Residual(128, 6, 256)
        self.conv_45, self.conv_5 = DepthWise(128, 128, 512), Residual(128, 2, 256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.conv_6_dw = ConvBlock(512, 512, 7, 1, 0, groups=512, prelu=False)
        self.linear, self.bn = nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512)

    def forward(self, x):
        x = self.conv_23(self.conv2_dw(self.conv1(x)))
        x = self.conv_45(self.conv_4(self.conv_34(self.conv_3(x))))
        x = self.conv_6_dw(self.conv_6_sep(self.conv_5(x)))
        return self.bn(self.linear(torch.flatten(x, 1)))


def randomize(net: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights and BN statistics that keep activations O(1); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name == "features.weight":
                continue  # fixed at 1 in arcface_torch
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:  # BN weight, PReLU slope
                p.copy_(0.75 + 0.5 * torch.rand(p.shape, generator=g))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.75 + 0.5 * torch.rand(b.shape, generator=g))
    return net.eval()


def last_bn(net: nn.Module) -> nn.BatchNorm1d:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)][-1]


def calibrate(net: nn.Module, x: torch.Tensor, peak: float = 2.0) -> nn.Module:
    """Rescales the output BN's variance so that the largest embedding value on ``x`` is ``peak``
    (released nets give O(1) values; random deep ones can give hundreds)."""
    bn = last_bn(net)
    with torch.no_grad():
        out = net(x)
        centred = (out - bn.bias).abs().max() / (peak - bn.bias.abs().max())
        bn.running_var.copy_((bn.running_var + bn.eps) * centred ** 2 - bn.eps)
    return net


def set_eps(net: nn.Module, eps: float) -> nn.Module:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = eps
    return net

"""Tiny models for the engine tests (shared by test_engine*.py)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch
from torch import nn


class PlainCNN(nn.Module):
    """Conv, BatchNorm, grouped conv, GroupNorm, LayerNorm and two Linear layers."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
        self.gn = nn.GroupNorm(2, 8)
        self.conv3 = nn.Conv2d(8, 16, (3, 1), stride=(1, 2), padding=(2, 0), dilation=(2, 1))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(64, 32)
        self.ln = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.gn(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(torch.relu(self.ln(self.fc1(x))))


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def build(arch: str) -> nn.Module:
    """A small model in eval mode with deterministic weights."""
    torch.manual_seed(0)
    if arch == "cnn":
        model = PlainCNN()
    elif arch == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(num_classes=10)
    elif arch == "mobilenet":
        import torchvision

        model = torchvision.models.mobilenet_v3_small(num_classes=10)
    elif arch == "vit":
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                  mlp_ratio=2.0, num_classes=10)
    else:
        raise ValueError(arch)
    return _randomize_bn(model, 1).eval()


def images(n: int = 3, seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, 2 spinning threads run 50x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread for each test of a module that imports this fixture."""
    with _single_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """One thread for a module's expensive shared fixtures (and a subprocess that must round alike)."""
    with _single_thread():
        yield

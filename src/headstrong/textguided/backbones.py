"""Backbones by name: built-in small networks, torchvision models, timm models, or a module.

``create_features(backbone, in_chans, small_input)`` returns the network with its classifier
taken out (an ``nn.Identity`` in its place) and the width of the features it then outputs, so
the baseline and the text-guided head sit on exactly the same trunk.

Built-in networks (registered with ``@register_backbone``) exist so that CPU demos and tests
train in seconds: ``cnn-small`` and CIFAR-style ResNets (``resnet8-w16``, ...).
"""

from __future__ import annotations

import difflib
from typing import Callable, Optional

import torch
from torch import nn

from headstrong._registry import Registry

__all__ = ["register_backbone", "list_backbones", "create_features"]

_BUILTINS: Registry[Callable[[int], nn.Module]] = Registry("backbone")


def register_backbone(name: str) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """File a builder ``fn(in_chans) -> module with .fc and .num_features`` under ``name``."""
    return _BUILTINS.register(name)


# ---------------------------------------------------------------- built-in small networks


class SmallCNN(nn.Module):
    """Three conv stages (32-64-128 channels) with batch norm; ~100k parameters."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, width: int = 32) -> None:
        super().__init__()
        w = width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )

        self.stage1 = stage(in_chans, w // 2)
        self.pool1 = nn.MaxPool2d(2)
        self.stage2 = stage(w // 2, w)
        self.pool2 = nn.MaxPool2d(2)
        self.stage3 = stage(w, 2 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.num_features = 2 * w
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.stage1(x))
        x = self.pool2(self.stage2(x))
        x = self.flatten(self.pool(self.stage3(x)))
        return self.fc(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.downsample(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers): 3x3 stem, stride 1, no max-pool, 3 stages."""

    def __init__(self, blocks: int, width: int, in_chans: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            stage = [_BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(blocks)]
            layers.append(nn.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.num_features = 4 * width
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


@register_backbone("cnn-small")
def cnn_small(in_chans: int = 3) -> nn.Module:
    return SmallCNN(in_chans=in_chans, width=32)


@register_backbone("resnet8-w16")
def resnet8_w16(in_chans: int = 3) -> nn.Module:
    return CifarResNet(blocks=1, width=16, in_chans=in_chans)


@register_backbone("resnet8-w32")
def resnet8_w32(in_chans: int = 3) -> nn.Module:
    return CifarResNet(blocks=1, width=32, in_chans=in_chans)


@register_backbone("resnet20")
def resnet20(in_chans: int = 3) -> nn.Module:
    return CifarResNet(blocks=3, width=16, in_chans=in_chans)


# ---------------------------------------------------------------- names


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


def list_backbones(source: Optional[str] = None) -> list[str]:
    """Names ``create_features`` accepts: built-ins, then torchvision's, then timm's.

    ``source`` restricts the list: ``builtin``, ``torchvision`` or ``timm``.
    """
    sources = {"builtin": lambda: list(_BUILTINS), "torchvision": _torchvision_names, "timm": _timm_names}
    if source is not None:
        if source not in sources:
            raise ValueError(f"unknown backbone source {source!r}; expected one of {', '.join(sources)}")
        return sources[source]()
    return [name for fn in sources.values() for name in fn()]


def _unknown_backbone(name: str) -> ValueError:
    pool = list(dict.fromkeys(list_backbones()))
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return ValueError(
        f"unknown backbone {name!r}{hint}. Built-in: {', '.join(_BUILTINS)}; also any torchvision "
        f"classification model (torchvision:NAME) or timm model (timm:NAME), see "
        f"headstrong.textguided.backbones.list_backbones()"
    )


def _build_named(name: str, in_chans: int) -> nn.Module:
    source, sep, arch = name.partition(":")
    if not sep:
        source, arch = "", name
    if source not in ("", "torchvision", "timm"):
        raise ValueError(f"unknown backbone source {source!r} in {name!r}; expected torchvision:NAME, timm:NAME or a plain name")
    if source == "" and arch in _BUILTINS:
        return _BUILTINS[arch](in_chans)
    if source in ("", "torchvision"):
        import torchvision.models as tvm

        if arch in _torchvision_names():
            return tvm.get_model(arch, weights=None)
    if source in ("", "timm"):
        import timm

        if timm.is_model(arch):
            return timm.create_model(arch, pretrained=False, in_chans=in_chans)
    raise _unknown_backbone(name)


# ---------------------------------------------------------------- surgery


def _first_conv(module: nn.Module) -> tuple[Optional[nn.Module], str, Optional[nn.Conv2d]]:
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            return parent, attr, child
    return None, "", None


def _adapt_in_chans(module: nn.Module, in_chans: int) -> None:
    """Give the first convolution ``in_chans`` input channels (weights are trained from scratch)."""
    parent, attr, conv = _first_conv(module)
    if conv is None or conv.in_channels == in_chans:
        return
    new = nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, 1, conv.bias is not None,
        conv.padding_mode,
    )
    setattr(parent, attr, new)


class NoSmallInputStem(ValueError):
    """``small_input=True`` asked of a backbone family that has no CIFAR-style stem to swap in."""


def _small_input_stem(module: nn.Module, name: str) -> None:
    """CIFAR-style stem for ResNets: 3x3 stride-1 first conv and no max-pool."""
    if isinstance(module, (SmallCNN, CifarResNet)):
        return  # built for small images already
    conv = getattr(module, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(module, "maxpool"):
        raise NoSmallInputStem(
            f"small_input=True needs a ResNet-style backbone (a Conv2d 'conv1' and a 'maxpool'); "
            f"{name!r} has neither. Use a built-in small backbone ({', '.join(_BUILTINS)}) or a ResNet"
        )
    module.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    module.maxpool = nn.Identity()


def _take_classifier(module: nn.Module) -> Optional[int]:
    """Replace the final Linear by Identity; return its input width (None if none was found)."""
    if hasattr(module, "get_classifier") and hasattr(module, "reset_classifier"):
        width = getattr(module, "head_hidden_size", None) or getattr(module, "num_features", None)
        module.reset_classifier(0)
        return int(width) if width is not None else None
    for attr in ("fc", "classifier", "head", "heads"):
        child = getattr(module, attr, None)
        if isinstance(child, nn.Linear):
            setattr(module, attr, nn.Identity())
            return child.in_features
        if isinstance(child, nn.Sequential) and len(child) and isinstance(child[-1], nn.Linear):
            last = child[-1]
            child[-1] = nn.Identity()
            return last.in_features
        if isinstance(child, nn.Module) and isinstance(getattr(child, "head", None), nn.Linear):
            last = child.head  # torchvision ViT: heads.head
            child.head = nn.Identity()
            return last.in_features
    return None


def create_features(
    backbone: str | nn.Module,
    in_chans: int = 3,
    small_input: bool = False,
    num_features: Optional[int] = None,
) -> tuple[nn.Module, int]:
    """The backbone without its classifier, and the width of its output features.

    ``backbone`` is a name (see ``list_backbones``) or a module; a module is changed in place.
    Its feature width comes from its final Linear (``fc``, ``classifier[-1]``, ``heads.head``, or
    timm's ``reset_classifier``), else from ``num_features`` (argument or attribute).
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3; got {in_chans}")
    if isinstance(backbone, str):
        name = backbone
        module = _build_named(backbone, in_chans)
    elif isinstance(backbone, nn.Module):
        name = type(backbone).__name__
        module = backbone
    else:
        raise TypeError(f"backbone must be a name or an nn.Module; got {type(backbone).__name__}")
    _adapt_in_chans(module, in_chans)
    if small_input:
        _small_input_stem(module, name)
    width = _take_classifier(module)
    width = num_features or width or getattr(module, "num_features", None)
    if width is None:
        raise ValueError(
            f"cannot tell the feature width of backbone {name!r}: it has no final Linear "
            f"(fc, classifier, head, heads.head) and no num_features; pass num_features="
        )
    return module, int(width)

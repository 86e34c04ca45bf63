"""The text-guided classifier and its baseline: structure, every init, every kind of backbone,
small and 1-channel inputs, fx tracing, and the errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import headstrong as hs
from headstrong.textguided.backbones import create_features, list_backbones
from headstrong.textguided.models import random_unit_rows

EMB = F.normalize(torch.randn(10, 24, generator=torch.Generator().manual_seed(1)), dim=1)


def _linears_in_call_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
        for name, m in model.named_modules() if isinstance(m, nn.Linear)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return order


def test_text_guided_head_structure_and_forward() -> None:
    torch.manual_seed(0)
    model = hs.TextGuidedClassifier("cnn-small", class_embeddings=EMB * 3, in_chans=1)
    assert model.classifier_name == "head"
    assert isinstance(model.head, nn.Linear) and model.head.bias is None
    assert model.head.weight.shape == (10, 24) and model.projection.out_features == 24
    torch.testing.assert_close(model.head.weight, EMB)  # rows renormalised
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    features = F.normalize(model.projection(model.backbone(x)), dim=-1)
    torch.testing.assert_close(model(x), features @ EMB.T / 0.07, rtol=1e-5, atol=1e-5)
    assert _linears_in_call_order(model, x)[-2:] == ["projection", "head"]
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1] == "head"


def test_baseline_is_the_same_trunk_with_a_linear_head() -> None:
    torch.manual_seed(0)
    base = hs.build_baseline("cnn-small", num_classes=10, in_chans=1)
    torch.manual_seed(0)
    text = hs.TextGuidedClassifier("cnn-small", EMB, in_chans=1)
    assert base.classifier_name == "head" and base.head.bias is not None
    assert base.head.in_features == text.projection.in_features
    assert base.backbone.state_dict().keys() == text.backbone.state_dict().keys()
    x = torch.randn(2, 1, 28, 28)
    assert base(x).shape == (2, 10)
    assert _linears_in_call_order(base, x)[-1] == "head"


def test_logit_scale_is_clamped_at_ln_100_unless_disabled() -> None:
    x = torch.randn(3, 1, 28, 28)
    clamped = hs.TextGuidedClassifier("cnn-small", EMB, 1).eval()
    free = hs.TextGuidedClassifier("cnn-small", EMB, 1, max_logit_scale=None).eval()
    free.load_state_dict(clamped.state_dict())
    with torch.no_grad():
        clamped.logit_scale.fill_(10.0)
        free.logit_scale.fill_(10.0)
    cosines = clamped.head(clamped.forward_features(x))
    torch.testing.assert_close(clamped(x), cosines * 100.0, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(free(x), cosines * math.exp(10.0), rtol=1e-5, atol=1e-2)


def test_each_init_option() -> None:
    text = hs.TextGuidedClassifier("cnn-small", EMB, 1, init="text")
    name = hs.TextGuidedClassifier("cnn-small", EMB.flip(0), 1, init="name")
    rand = hs.TextGuidedClassifier("cnn-small", None, 1, init="random", num_classes=10, embed_dim=24, seed=3)
    rand_again = hs.TextGuidedClassifier("cnn-small", EMB, 1, init="random", seed=3)
    torch.manual_seed(5)
    linear = hs.TextGuidedClassifier("cnn-small", None, 1, init="random-linear", num_classes=10, embed_dim=24)
    torch.testing.assert_close(text.head.weight, EMB)
    torch.testing.assert_close(name.head.weight, EMB.flip(0))
    torch.testing.assert_close(rand.head.weight, random_unit_rows(10, 24, seed=3))
    torch.testing.assert_close(rand_again.head.weight, rand.head.weight)
    torch.testing.assert_close(rand.head.weight.norm(dim=1), torch.ones(10))
    # nn.Linear's own init: uniform within 1/sqrt(fan_in), rows not unit length
    bound = 1 / math.sqrt(24)
    assert linear.head.weight.abs().max() <= bound
    assert linear.head.weight.norm(dim=1).max() < 0.9
    for model in (text, name, rand, linear):  # all keep the normalisation and the logit scale
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_frozen_head_does_not_train() -> None:
    model = hs.TextGuidedClassifier("cnn-small", EMB, 1, freeze_head=True)
    assert not model.head.weight.requires_grad
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = F.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    torch.testing.assert_close(model.head.weight, EMB)


@pytest.mark.parametrize(
    ("backbone", "in_chans", "size", "small_input"),
    [
        ("cnn-small", 3, 28, False),
        ("resnet8-w16", 1, 28, False),
        ("resnet18", 1, 28, True),  # torchvision, CIFAR-style stem
        ("torchvision:mobilenet_v3_small", 3, 32, False),  # classifier[-1]
        ("timm:resnet10t", 1, 28, False),  # timm, reset_classifier
        ("timm:test_vit", 3, 32, False),
    ],
)
def test_backbones_by_name_take_small_one_or_three_channel_inputs(backbone, in_chans, size, small_input) -> None:
    model = hs.TextGuidedClassifier(backbone, EMB, in_chans, small_input=small_input).eval()
    base = hs.build_baseline(backbone, 10, in_chans, small_input=small_input).eval()
    x = torch.randn(2, in_chans, size, size)
    assert model(x).shape == (2, 10) and base(x).shape == (2, 10)
    assert torch.isfinite(model(x)).all()


def test_small_input_stem_keeps_resolution() -> None:
    features, width = create_features("resnet18", 1, small_input=True)
    assert width == 512
    assert features.conv1.stride == (1, 1) and features.conv1.kernel_size == (3, 3)
    assert isinstance(features.maxpool, nn.Identity)
    with pytest.raises(ValueError, match="small_input=True needs a ResNet-style backbone"):
        create_features("mobilenet_v2", 3, small_input=True)


def test_any_module_with_a_known_feature_size() -> None:
    class Trunk(nn.Module):
        num_features = 8

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(self.conv(x)).flatten(1)

    model = hs.TextGuidedClassifier(Trunk(), EMB, in_chans=1)  # first conv adapted to 1 channel
    assert model.backbone.conv.in_channels == 1 and model.projection.in_features == 8
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    bare = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="num_features="):
        hs.build_baseline(bare, 10)
    assert hs.build_baseline(bare, 10, num_features=4)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("kind", ["text", "baseline"])
def test_models_trace_with_torch_fx(kind: str) -> None:
    if kind == "text":
        model = hs.TextGuidedClassifier("resnet8-w16", EMB, 1).eval()
    else:
        model = hs.build_baseline("resnet8-w16", 10, 1).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(traced(x), model(x))
    assert "head" in {n.target for n in traced.graph.nodes if n.op == "call_module"}


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="10 rows but num_classes=5"):
        hs.TextGuidedClassifier("cnn-small", EMB, 1, num_classes=5)
    with pytest.raises(ValueError, match="unknown backbone 'resnet81'; close matches: resnet18"):
        hs.build_baseline("resnet81", 10)
    with pytest.raises(ValueError, match="Built-in: cnn-small, resnet8-w16"):
        hs.TextGuidedClassifier("not-a-net", EMB)
    with pytest.raises(ValueError, match="unknown init 'clip'; expected one of text, name, random, random-linear"):
        hs.TextGuidedClassifier("cnn-small", EMB, init="clip")
    with pytest.raises(ValueError, match="needs class_embeddings"):
        hs.TextGuidedClassifier("cnn-small", None)
    with pytest.raises(ValueError, match="in_chans must be 1 or 3"):
        hs.build_baseline("cnn-small", 10, in_chans=4)
    with pytest.raises(ValueError, match=r"\[num_classes >= 2, D\]"):
        hs.TextGuidedClassifier("cnn-small", torch.ones(24))
    with pytest.raises(ValueError, match="zero or non-finite row"):
        hs.TextGuidedClassifier("cnn-small", torch.zeros(3, 4))
    with pytest.raises(ValueError, match="unknown backbone source 'hub'"):
        hs.build_baseline("hub:resnet18", 10)


def test_registry_lists_builtins_then_torchvision_then_timm() -> None:
    builtin = list_backbones("builtin")
    assert builtin[:2] == ["cnn-small", "resnet8-w16"]
    assert "resnet18" in list_backbones("torchvision") and "resnet10t" in list_backbones("timm")
    with pytest.raises(ValueError, match="expected one of builtin, torchvision, timm"):
        list_backbones("hub")

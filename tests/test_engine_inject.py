"""``hs.inject`` equals a literal, slow reference (deep copy, one element, whole network).

Formats other than fp32 run the models in float64: batched and one-image forward passes then
differ by ~1e-16 and never fall on different sides of a rounding boundary of the format, so the
comparison is deterministic; fp32 runs the float32 model itself.
"""

from __future__ import annotations

import pytest
import torch

import headstrong as hs
from headstrong import formats

from _models import build, images, one_thread  # noqa: F401  (autouse fixture)
from _reference import assert_logits_match, reference_inject

ARCH_LAYERS = {
    # arch: (neuron layers, weight layers)
    "cnn": (["conv1", "bn1", "conv2", "gn", "conv3", "fc1", "ln", "fc2"], ["conv1", "conv2", "conv3", "bn1", "fc2"]),
    "resnet18": (["conv1", "layer1.0.bn2", "layer2.0.downsample.0", "layer3.1.conv1", "fc"],
                 ["conv1", "layer2.0.downsample.0", "layer1.1.bn1", "layer4.1.conv2", "fc"]),
    "mobilenet": (["features.0.0", "features.1.block.0.0", "features.2.block.1.1", "classifier.0", "classifier.3"],
                  ["features.1.block.0.0", "features.1.block.1.fc1", "features.4.block.1.1", "classifier.3"]),
    "vit": (["patch_embed.proj", "blocks.0.norm1", "blocks.0.attn.qkv", "blocks.1.mlp.fc2", "norm", "head"],
            ["patch_embed.proj", "blocks.0.attn.proj", "blocks.1.norm2", "head"]),
}


def region_bits(fmt_name: str) -> list[int]:
    """The highest and lowest bit of every bit group (sign, exponent, mantissa / magnitude)."""
    bits: list[int] = []
    for group in formats.get(fmt_name).bit_groups().values():
        bits += [max(group), min(group)]
    return sorted(set(bits), reverse=True)


def shapes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(mod, args, output) -> None:
            out.setdefault(name, tuple(output.shape[1:]))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


def make_records(model: torch.nn.Module, x: torch.Tensor, arch: str, fmt_name: str, seed: int = 0) -> list[dict]:
    """One neuron and one weight fault per bit, cycling over the architecture's layers."""
    g = torch.Generator().manual_seed(seed)
    neuron, weight = ARCH_LAYERS[arch]
    out_shapes = shapes(model, x)
    modules = dict(model.named_modules())
    records = []
    for i, bit in enumerate(region_bits(fmt_name)):
        layer = neuron[i % len(neuron)]
        size = torch.Size(out_shapes[layer]).numel()
        records.append({"kind": "neuron", "layer": layer, "index": int(torch.randint(size, (1,), generator=g)), "bit": bit})
        layer = weight[i % len(weight)]
        size = modules[layer].weight.numel()
        records.append({"kind": "weight", "layer": layer, "index": int(torch.randint(size, (1,), generator=g)), "bit": bit})
    return records


CASES = [("cnn", f) for f in ("fp32", "fp16", "bf16", "int8", "fp8_e4m3", "fp8_e5m2", "int16", "fxp16_8", "bfp8_16")]
CASES += [(arch, f) for arch in ("resnet18", "mobilenet", "vit") for f in ("fp32", "bf16", "int8")]
CASES += [("resnet18", "bfp8_16"), ("vit", "bfp8_16")]


@pytest.mark.parametrize(("arch", "fmt_name"), CASES)
def test_inject_matches_literal_reference(arch: str, fmt_name: str) -> None:
    model = build(arch)
    x, _ = images(2)
    if fmt_name != "fp32":
        model, x = model.double(), x.double()
    records = make_records(model, x, arch, fmt_name)
    got = hs.inject(model, x, hs.FaultSet.from_records(records), fmt=fmt_name)
    want = reference_inject(model, x, records, fmt=fmt_name)
    assert got.shape == (len(records), len(x), 10)
    assert_logits_match(got, want, rtol=2e-5 if fmt_name == "fp32" else 1e-9)
    # the faults did something: not every faulty output equals the golden one
    golden = model(x).detach()
    assert not torch.allclose(got, golden.expand_as(got))


def test_inject_without_range_detector_matches_reference() -> None:
    model = build("cnn")
    x, _ = images(2)
    with torch.no_grad():
        conv1 = model.conv1(x)
    small = (conv1.abs() + (conv1 == 0) * 10)[0].flatten().argmin()  # |v| < 2: bit 30 makes it huge
    records = [{"kind": "neuron", "layer": "conv1", "index": int(small), "bit": 30},
               {"kind": "neuron", "layer": "fc2", "index": 3, "bit": 30}]  # logits are small: bit 30 makes them huge
    got = hs.inject(model, x, records, range_detector=False)
    want = reference_inject(model, x, records, range_detector=False)
    assert_logits_match(got, want, rtol=2e-5)
    clamped = hs.inject(model, x, records, range_detector=True)
    assert float(got.abs().max()) > 1e20 > float(clamped.abs().max())


def test_inject_leaves_model_untouched() -> None:
    model = build("resnet18").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = images(2)
    faults = hs.FaultSet.from_records([{"kind": "weight", "layer": "fc", "index": 3, "bit": 6},
                                       {"kind": "neuron", "layer": "layer1.0.conv1", "index": 9, "bit": 7}])
    hs.inject(model, x, faults, fmt="int8")
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(m._forward_hooks for m in model.modules())

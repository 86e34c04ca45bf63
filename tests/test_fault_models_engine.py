"""Every fault model, applied by the engine, equals the literal reference (deep copy, edit the
elements' bits, whole network per image), on a small CNN and on ResNet-18 at 32x32.

As in test_engine_inject.py, formats other than fp32 run the models in float64, so batched and
one-image passes never fall on different sides of a rounding boundary of the format."""

from __future__ import annotations

import pytest
import torch

import headstrong as hs
from headstrong.engine import FaultEvaluator, inject_edits
from headstrong.faults.models import FaultEdits, get_fault_model

from _models import build, images, one_thread  # noqa: F401  (autouse fixture)
from _reference import assert_logits_match
from _reference_models import reference_models

NEURONS = {"cnn": ["conv1", "bn1", "conv3", "fc1", "ln", "fc2"],
           "resnet18": ["conv1", "layer1.0.bn2", "layer2.0.downsample.0", "layer3.1.conv1", "fc"]}
WEIGHTS = {"cnn": ["conv1", "conv2", "bn1", "fc1", "fc2"],
           "resnet18": ["conv1", "layer2.0.downsample.0", "layer1.1.bn1", "layer4.1.conv2", "fc"]}
PARAMS = {"multi-bit": {"k": 3}, "multi-site": {"n": 3}}
LOW_BITS = 8  # fp32 mantissa bits that batched and one-image passes may round differently


def sites(model: torch.nn.Module, x: torch.Tensor, arch: str, kind: str) -> dict[str, int]:
    modules = dict(model.named_modules())
    if kind == "weight":
        return {n: modules[n].weight.numel() for n in WEIGHTS[arch]}
    sizes: dict[str, int] = {}

    def record(name: str):
        def hook(module, args, out) -> None:
            sizes.setdefault(name, out[0].numel())
        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for n in NEURONS[arch]]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sizes


def check(model: torch.nn.Module, x: torch.Tensor, edits: FaultEdits, fmt: str, range_detector: bool = True) -> tuple:
    got, masked = inject_edits(model, x, edits, fmt, range_detector)
    want, want_masked = reference_models(model, x, edits.to_records(), len(edits), fmt, range_detector, edits.base_kind)
    assert got.shape == (len(edits), len(x), 10)
    assert_logits_match(got, want, rtol=2e-5 if fmt == "fp32" else 1e-9)
    if fmt == "fp32":
        # The reference runs one image at a time, the engine a batch: in fp32 a golden value may
        # differ in its last bits between the two, so whether a stuck low mantissa bit was
        # already at its value can differ. Only faults whose edits touch nothing above the
        # lowest LOW_BITS bits may disagree on masked.
        low = torch.ones(len(edits), dtype=torch.bool)
        low.scatter_reduce_(0, edits.fault, edits.mask < (1 << LOW_BITS), "amin")
        assert not bool(((masked != want_masked) & ~low[:, None]).any())
    else:
        assert torch.equal(masked, want_masked)
    return got, masked


def setup(arch: str, fmt: str, n: int = 2) -> tuple[torch.nn.Module, torch.Tensor]:
    model = build(arch)
    x, _ = images(n)
    if fmt != "fp32":
        model, x = model.double(), x.double()
    return model, x


SINGLE = ["flip", "stuck-at-0", "stuck-at-1", "multi-bit", "multi-site"]
CNN_CASES = [(m, f, k) for m in SINGLE for f in ("fp32", "bf16", "int8", "bfp8_16") for k in ("neuron", "weight")]
CNN_CASES += [("multi-bit", "fxp16_8", "neuron"), ("stuck-at-1", "fp8_e4m3", "weight")]
CNN_CASES += [("metadata", f, k) for f in ("int8", "int16", "bfp8_16") for k in ("neuron", "weight")]


@pytest.mark.parametrize(("name", "fmt", "kind"), CNN_CASES)
def test_models_match_reference_on_cnn(name: str, fmt: str, kind: str) -> None:
    model, x = setup("cnn", fmt)
    fm = get_fault_model(name, **PARAMS.get(name, {}))
    edits = fm.sample(sites(model, x, "cnn", kind), 6, fmt, kind=kind, generator=torch.Generator().manual_seed(3))
    got, masked = check(model, x, edits, fmt)
    golden = model(x).detach()
    assert not torch.equal(got, golden.expand_as(got).to(got.dtype))  # the faults did something
    # a masked pair's outputs are the golden run's (with the tensors held in the format)
    if bool(masked.any()) and fmt == "fp32":
        assert torch.equal(got[masked], golden.expand_as(got)[masked])


@pytest.mark.parametrize(("fmt", "kind"), [("fp32", "neuron"), ("fp32", "weight"), ("int8", "neuron"),
                                           ("bfp8_16", "weight"), ("bf16", "neuron")])
def test_ber_matches_reference_on_cnn(fmt: str, kind: str) -> None:
    model, x = setup("cnn", fmt, n=3)
    layers = sites(model, x, "cnn", kind)
    bits = hs.formats.get(fmt).bits
    p = 4.0 / (sum(layers.values()) * bits)  # about 4 errors per trial (per inference for neurons)
    edits = get_fault_model("ber", p=p).sample(layers, 4, fmt, kind=kind, inputs=len(x),
                                               generator=torch.Generator().manual_seed(0))
    assert edits.n_edits > 0
    if kind == "neuron":
        assert set(edits.sample.tolist()) <= {0, 1, 2} and bool((edits.sample >= 0).all())
    check(model, x, edits, fmt)


def test_stuck_at_masked_share_and_range_detector_off() -> None:
    model, x = setup("cnn", "fp32", n=2)
    edits = get_fault_model("stuck-at-0").sample(sites(model, x, "cnn", "neuron"), 12, "fp32",
                                                 generator=torch.Generator().manual_seed(5), bits=[30, 29])
    got, masked = check(model, x, edits, "fp32", range_detector=False)
    assert 0 < int(masked.sum()) < masked.numel()  # some bits were 0 already, some were not


@pytest.mark.parametrize(("name", "fmt", "kind"), [
    ("stuck-at-1", "int8", "weight"), ("stuck-at-0", "bf16", "neuron"), ("multi-bit", "fp32", "neuron"),
    ("multi-site", "int8", "neuron"), ("multi-site", "fp32", "weight"), ("metadata", "bfp8_16", "neuron"),
    ("metadata", "int8", "weight"),
])
def test_models_match_reference_on_resnet18(name: str, fmt: str, kind: str) -> None:
    model, x = setup("resnet18", fmt, n=2)
    fm = get_fault_model(name, **PARAMS.get(name, {}))
    edits = fm.sample(sites(model, x, "resnet18", kind), 2, fmt, kind=kind, generator=torch.Generator().manual_seed(1))
    check(model, x, edits, fmt)


def test_ber_on_resnet18_activations_matches_reference() -> None:
    model, x = setup("resnet18", "bf16", n=2)
    layers = sites(model, x, "resnet18", "neuron")
    edits = get_fault_model("ber", p=5.0 / (sum(layers.values()) * 16)).sample(
        layers, 2, "bf16", kind="neuron", inputs=len(x), generator=torch.Generator().manual_seed(0))
    assert edits.n_edits > 0
    check(model, x, edits, "bf16")


def test_ber_on_resnet18_weights_matches_reference() -> None:
    model, x = setup("resnet18", "fp32", n=2)
    layers = {n: m.weight.numel() for n, m in model.named_modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    edits = get_fault_model("ber", p=1e-6).sample(layers, 2, "fp32", kind="weight",
                                                  generator=torch.Generator().manual_seed(0))
    assert edits.n_edits > 100  # 11M weights x 32 bits x 1e-6: about 360 per trial
    check(model, x, edits, "fp32")


def test_flip_model_equals_the_single_flip_engine() -> None:
    model, x = setup("cnn", "int8")
    records = [{"kind": "neuron", "layer": "conv3", "index": 17, "bit": 6},
               {"kind": "weight", "layer": "fc1", "index": 100, "bit": 7}]
    single = hs.inject(model, x, records, fmt="int8")
    got, masked = inject_edits(model, x, records, "int8")
    assert torch.equal(got, single) and not bool(masked.any())


# ---------------------------------------------------------------- the batched path


BATCHED = [("flip", "neuron"), ("stuck-at-1", "weight"), ("stuck-at-0", "neuron"), ("multi-bit", "weight"),
           ("multi-site", "neuron"), ("multi-site", "weight"), ("ber", "neuron"), ("ber", "weight"),
           ("metadata", "neuron"), ("metadata", "weight")]


@pytest.mark.parametrize(("arch", "fmt", "chunk"), [("cnn", "int8", 1), ("cnn", "int8", 7), ("cnn", "bfp8_16", None),
                                                    ("resnet18", "fp32", None)])
def test_batched_path_equals_inject(arch: str, fmt: str, chunk: int | None) -> None:
    import torch.nn.functional as F

    model, x = setup(arch, fmt, n=3)
    _, y = images(3)
    batched = FaultEvaluator(model, fmt=fmt, chunk_size=chunk)
    batched.profile([(x, y)])
    paths: set[str] = set()
    for name, kind in BATCHED:
        if name == "metadata" and fmt == "fp32":
            continue
        layers = sites(model, x, arch, kind)
        params = {"p": 3.0 / (sum(layers.values()) * hs.formats.get(fmt).bits)} if name == "ber" else PARAMS.get(name, {})
        edits = get_fault_model(name, **params).sample(layers, 4, fmt, kind=kind, inputs=len(x),
                                                       generator=torch.Generator().manual_seed(2))
        logits, masked = inject_edits(model, x, edits, fmt)
        out = batched.evaluate_all_pairs(x, y, edits)
        loss = F.cross_entropy(logits.reshape(-1, 10).float(), y.repeat(4), reduction="none").view(4, 3)
        assert torch.equal(out.masked, masked), (name, kind)
        assert torch.equal(out.faulty_pred, logits.argmax(2)), (name, kind)
        assert torch.allclose(out.faulty_loss, loss, rtol=1e-5, atol=1e-6, equal_nan=True), (name, kind)
        assert torch.equal(out.nonfinite, ~torch.isfinite(logits).all(2))
        golden = model(x).detach()
        assert torch.equal(out.golden_pred, golden.argmax(1).expand(4, 3)) or fmt != "fp32"
        paths.update(batched.paths.values())
    assert {"fx", "hooks", "delta", "weights"} <= paths


@pytest.mark.parametrize("fmt", ["int8", "bfp8_16"])
def test_one_fault_per_image_equals_the_diagonal_of_all_pairs(fmt: str) -> None:
    model, x = setup("cnn", fmt, n=5)
    _, y = images(5)
    batched = FaultEvaluator(model, fmt=fmt, chunk_size=2)
    batched.profile([(x, y)])
    rows = torch.arange(5)
    for name, kind in BATCHED:
        layers = sites(model, x, "cnn", kind)
        params = {"p": 3.0 / (sum(layers.values()) * hs.formats.get(fmt).bits)} if name == "ber" else PARAMS.get(name, {})
        edits = get_fault_model(name, **params).sample(layers, 5, fmt, kind=kind, inputs=1,
                                                       generator=torch.Generator().manual_seed(4))
        one = batched.evaluate(x, y, edits)
        every = FaultEdits(edits.fault, edits.kind, edits.layer, edits.index, edits.op, edits.mask,
                           torch.where(edits.sample >= 0, edits.fault, edits.sample), 5, edits.model, edits.base_kind)
        pairs = batched.evaluate_all_pairs(x, y, every)
        for key, value in one.tensors().items():
            assert value.shape == (5,)
            assert torch.equal(value, getattr(pairs, key)[rows, rows]), (name, kind, key)
    with pytest.raises(ValueError, match="3 faults for 5 images"):
        batched.evaluate(x, y, get_fault_model("flip").sample(sites(model, x, "cnn", "neuron"), 3, fmt))


def test_hs_inject_takes_every_model() -> None:
    model, x = setup("cnn", "int8")
    layers = sites(model, x, "cnn", "weight")
    for name in hs.faults.list_fault_models():
        params = {"p": 1e-4} if name == "ber" else PARAMS.get(name, {})
        edits = get_fault_model(name, **params).sample(layers, 3, "int8", kind="weight",
                                                       generator=torch.Generator().manual_seed(0))
        logits = hs.inject(model, x, edits, fmt="int8")
        assert torch.equal(logits, inject_edits(model, x, edits, "int8")[0]), name
    records = [{"kind": "neuron", "layer": "conv3", "index": 17, "bit": 6}]
    stuck = hs.inject(model, x, records, fmt="int8", fault_model="stuck-at-1")
    edits = get_fault_model("stuck-at-1").from_sites(hs.FaultSet.from_records(records), "int8")
    assert torch.equal(stuck, reference_models(model, x, edits.to_records(), 1, "int8")[0])
    with pytest.raises(ValueError, match="ber faults are sampled, not given as single sites"):
        hs.inject(model, x, records, fault_model=get_fault_model("ber", p=1e-3))
    with pytest.raises(ValueError, match="unknown fault model 'stuck'; expected one of flip"):
        hs.inject(model, x, records, fault_model="stuck")
    with pytest.raises(ValueError, match="metadata faults need a format with metadata; fp32 has none"):
        hs.inject(model, x, records, fmt="fp32", fault_model="metadata")


def test_edits_of_one_element_combine_as_in_hardware() -> None:
    from headstrong.engine.edits import FLIP, SET0, SET1, edit_tensor

    fmt = hs.formats.get("int8", scale=0.5)
    x = fmt.quantize(torch.tensor([[1.0, 2.0, -3.0]]))  # codes 2, 4, -6
    rows, index = torch.zeros(4, dtype=torch.int64), torch.tensor([0, 0, 1, 2])
    op = torch.tensor([FLIP, FLIP, FLIP, SET1])
    mask = torch.tensor([1, 1, 3, 2])  # element 0 flipped twice at bit 0: unchanged
    new, changed = edit_tensor(x, fmt, rows, index, op, mask)
    assert new.tolist() == [[1.0, 3.5, -3.0]]  # 4 ^ 3 = 7; -6 = 0b11111010 already has bit 1
    assert changed.tolist() == [False, False, True, False]
    new, _ = edit_tensor(x, fmt, torch.zeros(2, dtype=torch.int64), torch.tensor([1, 1]),
                         torch.tensor([FLIP, SET0]), torch.tensor([1, 4]))
    assert new.tolist() == [[1.0, 0.5, -3.0]]  # 4 ^ 1 = 5, then bit 2 cleared: 1

"""The fault-model registry: names, parameters, seeded samplers and their errors."""

from __future__ import annotations

import pytest
import torch

from headstrong import formats
from headstrong.faults import FaultSet
from headstrong.faults.models import (
    OPS,
    FaultEdits,
    FaultModel,
    get_fault_model,
    list_fault_models,
    register_fault_model,
)

LAYERS = {"conv1": 300, "fc": 40}
PARAMS = {"multi-bit": {"k": 2}, "multi-site": {"n": 3}, "ber": {"p": 1e-3}}
ALL = ["flip", "stuck-at-0", "stuck-at-1", "multi-bit", "multi-site", "ber", "metadata", "zero", "random-value"]


def sample(name: str, fmt: str = "int8", seed: int = 0, count: int = 50, **extra: object) -> FaultEdits:
    model = get_fault_model(name, **PARAMS.get(name, {}))
    return model.sample(LAYERS, count, fmt, generator=torch.Generator().manual_seed(seed), **extra)


def test_every_model_of_the_issue_is_registered() -> None:
    assert list_fault_models() == ALL
    for name in ALL:
        model = get_fault_model(name, **PARAMS.get(name, {}))
        assert isinstance(model, FaultModel) and model.name == name
    assert get_fault_model("ber", p=1e-7).params == {"p": 1e-7}
    assert get_fault_model("multi-bit", k=3, burst=False).params == {"k": 3, "burst": False}
    assert get_fault_model("multi-site", n=4).describe() == "multi-site(n=4)"
    assert get_fault_model().name == "flip"


@pytest.mark.parametrize("name", ALL)
def test_samplers_are_seeded(name: str) -> None:
    a, b, c = sample(name, seed=1), sample(name, seed=1), sample(name, seed=2)
    assert a == b and a != c
    assert len(a) == 50 and a.model == name
    assert set(a.layer_names) <= set(LAYERS)


@pytest.mark.parametrize("name", ["flip", "stuck-at-0", "stuck-at-1", "metadata"])
def test_single_site_models_are_one_bit_of_one_element(name: str) -> None:
    edits = sample(name, count=400)
    assert edits.n_edits == 400 and torch.equal(edits.fault, torch.arange(400))
    assert bool(((edits.mask & (edits.mask - 1)) == 0).all())  # one bit each
    op = {"flip": "flip", "stuck-at-0": "set0", "stuck-at-1": "set1", "metadata": "meta"}[name]
    assert set(edits.op) == {op}
    width = 32 if name == "metadata" else 8  # int8: a float32 scale
    assert set(edits.mask.tolist()) == {1 << b for b in range(width)}
    sizes = torch.tensor([LAYERS[n] for n in edits.layer])
    assert bool((edits.index < sizes).all())
    # sites are uniform over all elements: conv1 holds 300 of the 340
    share = sum(n == "conv1" for n in edits.layer) / 400
    assert 0.8 < share < 0.95


def test_multi_bit_bursts_and_anywhere() -> None:
    burst = get_fault_model("multi-bit", k=3).sample(LAYERS, 300, "fp16", generator=torch.Generator().manual_seed(0))
    masks = burst.mask
    low = masks & -masks
    assert bool((masks == low * 7).all())  # three adjacent bits
    assert int(masks.max()) < 1 << 16 and set((low.log2().long()).tolist()) == set(range(14))
    anywhere = get_fault_model("multi-bit", k=3, burst=False).sample(
        LAYERS, 300, "fp16", generator=torch.Generator().manual_seed(0))
    counts = [bin(m).count("1") for m in anywhere.mask.tolist()]
    assert counts == [3] * 300 and int(anywhere.mask.max()) < 1 << 16
    assert not bool((anywhere.mask == (anywhere.mask & -anywhere.mask) * 7).all())
    restricted = get_fault_model("multi-bit", k=2).sample(LAYERS, 50, "fp32", bits=[28, 29, 30],
                                                          generator=torch.Generator().manual_seed(0))
    assert set(restricted.mask.tolist()) <= {3 << 28, 3 << 29}


def test_multi_site_groups_n_edits_per_fault() -> None:
    edits = sample("multi-site", count=20)
    assert edits.n_edits == 60 and torch.equal(edits.fault, torch.arange(20).repeat_interleave(3))
    assert set(edits.op) == {"flip"}


def test_ber_weights_once_per_trial_activations_per_inference() -> None:
    g = torch.Generator().manual_seed(0)
    model = get_fault_model("ber", p=0.01)
    weights = model.sample(LAYERS, 30, "fp32", kind="weight", generator=g)
    assert bool((weights.sample == -1).all())
    bits_hit = sum(bin(m).count("1") for m in weights.mask.tolist())
    expected = 30 * 340 * 32 * 0.01
    assert abs(bits_hit - expected) < 5 * expected**0.5
    neurons = model.sample(LAYERS, 30, "fp32", kind="neuron", inputs=4, generator=g)
    assert set(neurons.sample.tolist()) == {0, 1, 2, 3}
    bits_hit = sum(bin(m).count("1") for m in neurons.mask.tolist())
    assert abs(bits_hit - 4 * expected) < 5 * (4 * expected) ** 0.5
    # within one (fault, layer, inference) every element appears once
    key = (neurons.fault * 10 + neurons.layer_ids) * 1000 * 4 + neurons.sample * 1000 + neurons.index
    assert len(key.unique()) == neurons.n_edits
    nothing = get_fault_model("ber", p=0.0).sample(LAYERS, 5, "fp32", kind="weight")
    assert len(nothing) == 5 and nothing.n_edits == 0


def test_sites_become_edits() -> None:
    sites = FaultSet(["neuron", "weight"], ["conv1", "fc"], [3, 7], [2, 5])
    assert get_fault_model("stuck-at-1").from_sites(sites, "int8").to_records() == [
        {"fault": 0, "kind": "neuron", "layer": "conv1", "index": 3, "op": "set1", "mask": 4, "sample": None},
        {"fault": 1, "kind": "weight", "layer": "fc", "index": 7, "op": "set1", "mask": 32, "sample": None},
    ]
    assert get_fault_model("multi-bit", k=2).from_sites(sites, "int8").mask.tolist() == [12, 96]
    assert get_fault_model("metadata").from_sites(sites, "bfp8_16").op == ["meta", "meta"]
    with pytest.raises(ValueError, match="ber faults are sampled, not given as single sites"):
        get_fault_model("ber", p=0.1).from_sites(sites, "int8")


def test_edit_records_round_trip_and_are_checked() -> None:
    edits = sample("multi-site", count=4)
    again = FaultEdits.from_records(edits.to_records(), n_faults=4, model="multi-site")
    assert again == edits
    with pytest.raises(ValueError, match="unknown edit op 'xor'; expected one of flip, set0, set1, meta"):
        FaultEdits([0], "neuron", "fc", [1], "xor", [1])
    with pytest.raises(ValueError, match="lacks \\['mask'\\]"):
        FaultEdits.from_records([{"fault": 0, "kind": "neuron", "layer": "fc", "index": 1, "op": "flip"}])
    with pytest.raises(ValueError, match="n_faults=1 but edits name fault 2"):
        FaultEdits([2], "neuron", "fc", [1], "flip", [1], n_faults=1)
    assert OPS == ("flip", "set0", "set1", "meta", "value")


# ---------------------------------------------------------------- bad input (issue, item 4)


def test_unknown_model_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="unknown fault model 'stuck-at-2'; expected one of flip, stuck-at-0, "
                                         "stuck-at-1, multi-bit, multi-site, ber, metadata"):
        get_fault_model("stuck-at-2")


def test_k_larger_than_the_format_is_refused() -> None:
    model = get_fault_model("multi-bit", k=9)
    with pytest.raises(ValueError, match="k=9 is larger than int8's 8 bits; allowed k: 1..8"):
        model.sample(LAYERS, 3, "int8")
    model.sample(LAYERS, 3, "fp16")  # 9 of 16 bits is fine
    with pytest.raises(ValueError, match="k must be a positive int"):
        get_fault_model("multi-bit", k=0)


@pytest.mark.parametrize("p", [-1e-9, 1.01, float("nan")])
def test_rate_outside_zero_one_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        get_fault_model("ber", p=p)


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fxp16_8"])
def test_metadata_on_a_format_without_metadata_is_refused(fmt: str) -> None:
    with pytest.raises(ValueError, match=f"metadata faults need a format with metadata; {fmt} has none.*int8, int16.*bfpM_B"):
        get_fault_model("metadata").sample(LAYERS, 3, fmt)


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="fault model 'ber' needs p \\(e.g. p=1e-7\\)"):
        get_fault_model("ber")
    with pytest.raises(ValueError, match="fault model 'ber' takes only p; got k"):
        get_fault_model("ber", p=0.1, k=2)
    with pytest.raises(ValueError, match="fault model 'flip' takes no parameters; got p"):
        get_fault_model("flip", p=0.1)
    with pytest.raises(ValueError, match="multi-site: n must be a positive int"):
        get_fault_model("multi-site", n=0)
    with pytest.raises(ValueError, match="already registered"):
        register_fault_model("flip")(lambda: None)
    with pytest.raises(ValueError, match="bits \\[8\\] do not fit int8; allowed positions are 0..7"):
        get_fault_model("flip").sample(LAYERS, 3, "int8", bits=[8])
    with pytest.raises(ValueError, match="unknown fault kind 'bias'"):
        get_fault_model("flip").sample(LAYERS, 3, "int8", kind="bias")
    assert formats.get("int8").metadata_bits == 32


def test_sites_with_bits_outside_the_format_name_it() -> None:
    sites = FaultSet(["neuron"], ["conv1"], [3], [14])
    with pytest.raises(ValueError, match="bit 14 is out of range for int8; allowed bits are 0..7"):
        get_fault_model("stuck-at-1").from_sites(sites, "int8")
    with pytest.raises(ValueError, match="bit 14 is out of range for bfp8_16's metadata; allowed bits are 0..7"):
        get_fault_model("metadata").from_sites(sites, "bfp8_16")

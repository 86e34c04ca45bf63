"""FaultSet columns, slicing and validation; sample sizes; seeded samplers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import headstrong as hs
from headstrong.faults import FaultSet, sample_neuron_faults, sample_size, sample_weight_faults

RECORDS = [
    {"kind": "neuron", "layer": "0", "index": 123, "bit": 30},
    {"kind": "weight", "layer": "2", "index": 7, "bit": 22, "sample": 1},
    {"kind": "neuron", "layer": "2", "index": 3, "bit": 0},
]


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(6, 5))


def test_columns_frame_len_and_slicing() -> None:
    faults = FaultSet.from_records(RECORDS)
    assert len(faults) == 3
    assert faults.kind == ["neuron", "weight", "neuron"]
    assert faults.layer == ["0", "2", "2"] and faults.layer_names == ("0", "2")
    assert faults.index.tolist() == [123, 7, 3] and faults.bit.tolist() == [30, 22, 0]
    assert faults.sample.tolist() == [-1, 1, -1] and not faults.has_sample
    frame = faults.to_frame()
    assert list(frame.columns) == ["kind", "layer", "index", "bit", "sample"]
    assert FaultSet.from_frame(frame) == faults
    tail = faults[1:]
    assert len(tail) == 2 and tail.to_records()[0] == {**RECORDS[1]}
    assert faults[-1].to_records() == [{**RECORDS[2], "sample": None}]
    assert faults[torch.tensor([True, False, True])].index.tolist() == [123, 3]
    assert faults[[2, 0]].layer == ["2", "0"]
    both = FaultSet.concat([faults, faults[:1]])
    assert len(both) == 4 and both.layer[-1] == "0"
    assert faults.with_sample([0, 1, 2]).has_sample
    with pytest.raises(IndexError):
        faults[3]


def test_bad_records_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'activation'; expected one of neuron, weight"):
        FaultSet.from_records([{"kind": "activation", "layer": "0", "index": 0, "bit": 0}])
    with pytest.raises(ValueError, match="lacks \\['bit'\\]"):
        FaultSet.from_records([{"kind": "neuron", "layer": "0", "index": 0}])
    with pytest.raises(ValueError, match="unexpected keys \\['bits'\\]"):
        FaultSet.from_records([{"kind": "neuron", "layer": "0", "index": 0, "bit": 1, "bits": 2}])
    with pytest.raises(ValueError, match="index must be >= 0"):
        FaultSet("neuron", "0", [-1], [0])
    with pytest.raises(TypeError, match="integers"):
        FaultSet("neuron", "0", [1.5], [0])
    with pytest.raises(ValueError, match="one per fault"):
        FaultSet("neuron", "0", [1, 2], [0, 1, 2])


def test_validation_against_the_model() -> None:
    model = tiny()
    FaultSet.from_records(RECORDS, model=model)  # valid
    with pytest.raises(ValueError, match="unknown layer 'conv'.*close names"):
        FaultSet.from_records([{"kind": "neuron", "layer": "conv", "index": 0, "bit": 0}], model=model)
    with pytest.raises(ValueError, match=r"weight index 30 out of range for layer '2': weight shape \(5, 6\)"):
        FaultSet.from_records([{"kind": "weight", "layer": "2", "index": 30, "bit": 0}], model=model)
    with pytest.raises(ValueError, match="layer '1' of type ReLU, which has no weight"):
        FaultSet.from_records([{"kind": "weight", "layer": "1", "index": 0, "bit": 0}], model=model)
    faults = FaultSet("neuron", "0", [4 * 6 * 6], [3])
    with pytest.raises(ValueError, match=r"neuron index 144 out of range for layer '0': output shape \(4, 6, 6\)"):
        faults.validate(model, output_shapes={"0": (4, 6, 6)})
    with pytest.raises(ValueError, match="bit 3 out of range for a 2-bit format"):
        FaultSet("neuron", "0", [0], [3]).validate(model, bits=2)
    close = "layer1.0.conv1"
    resnet_like = nn.Sequential()
    resnet_like.add_module("layer1", nn.Sequential(nn.Conv2d(1, 1, 1)))
    with pytest.raises(ValueError, match="layer1.0"):
        FaultSet("neuron", close, [0], [0]).validate(resnet_like)


@pytest.mark.parametrize(("population", "margin", "confidence"), [(10**6, 0.01, 0.99), (1000, 0.05, 0.95), (50, 0.01, 0.99)])
def test_sample_size_is_leveugles_formula(population: int, margin: float, confidence: float) -> None:
    from scipy import stats

    t = stats.norm.ppf(0.5 + confidence / 2)
    n = population / (1 + margin**2 * (population - 1) / (t**2 * 0.25))
    assert sample_size(population, margin, confidence) == math.ceil(n)
    assert sample_size(population, margin, confidence) <= population


def test_sample_size_known_values_and_errors() -> None:
    assert sample_size(10**6, 0.01, 0.99) == 16317  # n0 = 2.5758^2 / (4 * 1e-4) = 16587, finite-population corrected
    assert sample_size(1, 0.01, 0.99) == 1
    with pytest.raises(ValueError, match="margin"):
        sample_size(100, 0.0)
    with pytest.raises(ValueError, match="population"):
        sample_size(0)


def test_samplers_are_seeded_and_in_range() -> None:
    row = {"layer": "layer1.0.conv1", "output_shape": (64, 8, 8), "weight_shape": (64, 64, 3, 3)}
    a = sample_neuron_faults(row, 500, 32, torch.Generator().manual_seed(0))
    b = sample_neuron_faults(row, 500, 32, torch.Generator().manual_seed(0))
    assert a == b and a.kind == ["neuron"] * 500 and a.layer_names == ("layer1.0.conv1",)
    assert 0 <= int(a.index.min()) and int(a.index.max()) < 64 * 64 and int(a.bit.max()) < 32
    assert len(set(a.bit.tolist())) > 20  # all bits drawn
    w = sample_weight_faults(row, 200, [30, 31], torch.Generator().manual_seed(1))
    assert set(w.bit.tolist()) == {30, 31} and int(w.index.max()) < 64 * 64 * 9
    bare = sample_neuron_faults((10,), 5, 8, layer="fc")
    assert bare.layer == ["fc"] * 5
    with pytest.raises(ValueError, match="layer="):
        sample_neuron_faults((10,), 5, 8)


def test_public_names() -> None:
    assert hs.FaultSet is FaultSet
    assert hs.faults.sample_size is sample_size

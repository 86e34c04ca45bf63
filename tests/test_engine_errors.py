"""Bad input to the engine: each a clear error naming the problem and what is allowed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import headstrong as hs
from headstrong.engine import FaultEvaluator

from _models import PlainCNN, one_thread  # noqa: F401  (autouse fixture)


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.spare = nn.Linear(4, 4)  # never called
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def x3() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8)


def test_model_without_parameters() -> None:
    model = nn.Sequential(nn.Flatten(), nn.ReLU())
    with pytest.raises(ValueError, match="model has no parameters"):
        hs.inject(model, x3(), [{"kind": "neuron", "layer": "1", "index": 0, "bit": 0}])
    with pytest.raises(ValueError, match="model has no parameters"):
        FaultEvaluator(model)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        hs.injectable_layers("resnet")


def test_input_of_the_wrong_shape() -> None:
    model = PlainCNN().eval()
    faults = [{"kind": "neuron", "layer": "conv1", "index": 0, "bit": 30}]
    with pytest.raises(ValueError, match=r"input of shape \(2, 1, 32, 32\) does not fit the model"):
        hs.inject(model, torch.randn(2, 1, 32, 32), faults)
    with pytest.raises(ValueError, match="expected a non-empty batch"):
        hs.inject(model, torch.randn(3), faults)
    with pytest.raises(ValueError, match="floating"):
        hs.inject(model, torch.zeros(2, 3, 32, 32, dtype=torch.long), faults)
    ev = FaultEvaluator(model)
    with pytest.raises(ValueError, match="does not fit the model"):
        ev.profile([torch.randn(2, 5, 32, 32)])


def test_layer_that_never_runs() -> None:
    model = Unused().eval()
    assert hs.injectable_layers(model) == ["conv", "spare", "fc"]
    assert hs.injectable_layers(model, x3()) == ["conv", "fc"]
    with pytest.raises(ValueError, match="layer 'spare' never runs in the model's forward pass"):
        hs.inject(model, x3(), [{"kind": "neuron", "layer": "spare", "index": 0, "bit": 3}])
    with pytest.raises(ValueError, match="layer 'spare' never runs"):
        hs.inject(model, x3(), [{"kind": "weight", "layer": "spare", "index": 0, "bit": 3}])
    ev = FaultEvaluator(model)
    info = ev.profile([x3()])
    assert list(info["layer"]) == ["conv", "fc"]  # the unused layer is left out of campaigns
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="layer 'spare' never runs"):
        ev.evaluate(x3(), y, hs.FaultSet("neuron", "spare", [0, 1], [3, 3]))


def test_faults_on_a_layer_without_weight() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()
    with pytest.raises(ValueError, match="layer '1' of type ReLU, which has no weight"):
        hs.inject(model, x3(), [{"kind": "weight", "layer": "1", "index": 0, "bit": 3}])
    # a neuron fault on it is fine: any module can be named explicitly
    out = hs.inject(model, x3(), [{"kind": "neuron", "layer": "1", "index": 0, "bit": 30}])
    assert out.shape == (1, 2, 10)


def test_fault_out_of_range_and_unknown_names() -> None:
    model = PlainCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"neuron index 8192 out of range for layer 'conv1': output shape \(8, 32, 32\)"):
        hs.inject(model, x, [{"kind": "neuron", "layer": "conv1", "index": 8192, "bit": 3}])
    with pytest.raises(ValueError, match="unknown layer 'conv_1'; close names in the model: conv1"):
        hs.inject(model, x, [{"kind": "neuron", "layer": "conv_1", "index": 0, "bit": 3}])
    with pytest.raises(ValueError, match="bit 8 out of range for a 8-bit format"):
        hs.inject(model, x, [{"kind": "neuron", "layer": "conv1", "index": 0, "bit": 8}], fmt="int8")
    with pytest.raises(ValueError, match="unknown format"):
        hs.inject(model, x, [{"kind": "neuron", "layer": "conv1", "index": 0, "bit": 1}], fmt="fp33")
    with pytest.raises(TypeError, match="FaultSet or a list"):
        hs.inject(model, x, "conv1")


def test_no_faults_give_an_empty_result() -> None:
    model = PlainCNN().eval()
    out = hs.inject(model, torch.randn(2, 3, 32, 32), hs.FaultSet("neuron", [], [], []))
    assert out.shape == (0, 2, 10)

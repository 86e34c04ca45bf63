"""``headstrong layers MODEL`` and the suggestions for an unknown ``--layers`` name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import headstrong as hs
from headstrong._suggest import close_names
from headstrong.campaign.spec import select_layers
from headstrong.cli.main import app
from headstrong.report.model_layers import describe_layers
from headstrong.train import load_checkpoint, save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", num_classes=10, in_chans=1, small_input=True)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model)


def test_describe_layers_gives_type_shape_neurons_and_weights_in_forward_order() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5))
    rows = describe_layers(model, torch.zeros(1, 1, 6, 6))
    assert [(r.name, r.type, r.output_shape, r.neurons, r.weights) for r in rows] == [
        ("0", "Conv2d", (4, 6, 6), 144, 36), ("3", "Linear", (5,), 5, 720)]
    assert model.training  # left as it was


def test_layers_command_lists_every_injectable_layer_of_a_checkpoint(checkpoint: Path) -> None:
    result = runner.invoke(app, ["layers", str(checkpoint)])
    assert result.exit_code == 0, result.output
    model, _ = load_checkpoint(checkpoint)
    expected = describe_layers(model, torch.zeros(1, 1, 28, 28))
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s*\d+\s", line)]
    assert [r[1] for r in rows] == [e.name for e in expected] == hs.injectable_layers(model, torch.zeros(1, 1, 28, 28))
    for row, info in zip(rows, expected):
        assert row[2:] == [info.type, "x".join(map(str, info.output_shape)), f"{info.neurons:,}", f"{info.weights:,}"]
    assert "head is the classification layer" in result.stdout and "backbone.NAME" in result.stdout
    assert max(len(line.rstrip()) for line in result.stdout.splitlines()) <= 100


def test_layers_command_takes_a_model_name_and_refuses_an_unknown_one() -> None:
    result = runner.invoke(app, ["layers", "cnn-small", "--dataset", "mnist"])
    assert result.exit_code == 0, result.output
    assert "injectable layers in forward order (mnist images, 1x28x28)" in " ".join(result.stdout.split())
    bad = runner.invoke(app, ["layers", "resnet-1000"])
    assert bad.exit_code == 2 and "unknown backbone 'resnet-1000'" in bad.output


AVAILABLE = ["backbone.conv1", "backbone.bn1"] + [f"backbone.layer{i}.{j}.conv{k}" for i in range(1, 5)
                                                   for j in range(2) for k in (1, 2)] + ["projection", "head"]


def test_unknown_layer_suggests_all_close_names_and_explains_the_wrapped_names() -> None:
    with pytest.raises(ValueError) as error:
        select_layers(hs.CampaignSpec(layers="conv1"), AVAILABLE)
    message = str(error.value)
    conv1 = [n for n in AVAILABLE if n.endswith(".conv1")]
    assert len(conv1) == 9 and all(n in message for n in conv1)  # all of them, not the first few
    assert "carry a 'backbone.' prefix" in message
    with pytest.raises(ValueError, match=r"'fc': did you mean head\?.*torchvision's fc.*is called 'head'"):
        select_layers(hs.CampaignSpec(layers=("fc",)), AVAILABLE)
    assert close_names("backbone.layer3.1.conv3", AVAILABLE) == ["backbone.layer3.1.conv1", "backbone.layer3.1.conv2"]
    with pytest.raises(ValueError, match="'xyz': no layer has a close name; injectable layers: backbone.conv1, "):
        select_layers(hs.CampaignSpec(layers="xyz"), AVAILABLE)


def test_inject_with_a_torchvision_layer_name_suggests_the_wrapped_one(tmp_path: Path, checkpoint: Path) -> None:
    result = runner.invoke(app, ["inject", str(checkpoint), "--layers", "fc", "--max-images", "8", "--no-progress",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "did you mean head?" in result.output and "Traceback" not in result.output


def test_inject_takes_a_torchvision_name_without_a_small_image_stem(tmp_path: Path) -> None:
    """Fashion-MNIST's 28x28 images give ResNets the CIFAR stem; MobileNet has none and keeps its own
    (it failed with 'small_input=True needs a ResNet-style backbone' before)."""
    result = runner.invoke(app, ["inject", "mobilenet_v3_small", "--out", str(tmp_path / "run"), "--max-images", "4",
                                      "--n-faults", "2", "--layers", "backbone.features.0.0", "--all-images", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(hs.load_results(tmp_path / "run").records) == 2

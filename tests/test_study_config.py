"""Study configs are validated in full before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from headstrong.cli.main import app
from headstrong.study import grid, load_study, parse_study

REPO = Path(__file__).resolve().parents[1]
# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"study": {"backbonez": ["cnn-small"]}}, "unknown key(s) 'backbonez' in [study]; allowed: name, dataset"),
        ({"sutdy": {}}, "unknown key(s) 'sutdy' in [top level]; allowed: study, train, campaign"),
        ({"study": {"inits": ["baseline", "txt"]}}, "inits: unknown value(s) 'txt'; allowed: baseline, text, name"),
        ({"study": {"inits": ["text"]}}, "inits must include 'baseline'"),
        ({"study": {"formats": ["fp33"]}}, "formats: unknown value(s) 'fp33'; allowed: fp32, fp16"),
        ({"study": {"backbones": ["resnet181"]}}, "backbones: unknown 'resnet181'; allowed: a built-in (cnn-small"),
        ({"study": {"dataset": "fashionmnist2"}}, "dataset: unknown 'fashionmnist2'; allowed: fashion-mnist"),
        ({"study": {"seeds": []}}, "seeds must be a non-empty list of int"),
        ({"train": {"epochz": 1}}, "unknown key(s) 'epochz' in [train]; allowed: descriptions"),
        ({"train": {"backbone": "cnn-small"}}, "unknown key(s) 'backbone' in [train]"),
        ({"train": {"epochs": 0}}, "epochs must be at least 1"),
        ({"campaign": {"n_faults": 0}}, "[campaign] n_faults must be a positive integer"),
        ({"campaign": {"faults": 3}}, "unknown key(s) 'faults' in [campaign]; allowed: n_faults"),
    ],
)
def test_bad_study_config_names_the_key_and_the_choices(data: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_study(data)
    assert message in str(error.value)


def test_shipped_study_config_is_valid_and_covers_the_issue() -> None:
    config = load_study(REPO / "studies" / "fashion_mnist.toml")
    assert {"resnet18", "mobilenet_v2"} <= set(config.backbones)
    assert any(b.startswith(("convnext", "vit")) for b in config.backbones)
    assert set(config.inits) == {"baseline", "text", "name", "random", "random-linear"}
    assert len(config.seeds) == 3
    cells = grid(config)
    assert len(cells) == 3 * 5 * 3
    assert cells[0].is_baseline  # each backbone/seed trains its baseline first


def test_study_command_rejects_a_bad_file_before_running(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[study]\nbackbones = ["cnn-small"]\nformat = ["fp32"]\n')
    result = CliRunner().invoke(app, ["study", str(path)])
    assert result.exit_code == 2
    assert "unknown key(s) 'format' in [study]" in result.output
    assert not (tmp_path / "runs").exists()


def test_missing_or_invalid_study_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="study config .*nope.toml' does not exist"):
        load_study(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(ValueError, match="study config .*bad.toml' is not valid TOML"):
        load_study(bad)

"""Reports and the inject / compare / report commands, on real tiny campaigns."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import headstrong as hs
from headstrong.cli.main import app
from headstrong.report.compare import compare_runs, match_layers
from headstrong.report.plots import align_layers
from test_campaign_resume import one_thread, tiny_data, tiny_model  # noqa: F401  (one_thread: autouse fixture)

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 'baseline' and a second model's run of the same campaign."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    spec = hs.CampaignSpec(kind="neuron", bits="exponent", n_faults=40, seed=0, only_correct=False)
    model = tiny_model()
    data = tiny_data(model)
    hs.run_campaign(model, data, spec, "cpu", root / "base", progress=False)
    other = tiny_model()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    hs.run_campaign(other, data, spec, "cpu", root / "other", progress=False)
    return root / "base", root / "other"


def test_report_writes_self_contained_html_pngs_and_markdown(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    runs = [hs.load_results(p) for p in two_runs]
    page = hs.report.build_report(runs, tmp_path / "rep", labels=["baseline", "text-guided"])
    text = page.read_text()
    for name in ("delta_loss_per_layer.png", "mismatch_per_bit.png", "mismatch_per_layer.png"):
        png = (tmp_path / "rep" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
        assert base64.b64encode(png).decode() in text  # embedded, no external file needed
    assert not re.search(r"src=['\"](?!data:)", text)
    for layer in runs[0].layers:
        assert f"<td>{layer}</td>" in text
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## baseline" in summary and "## text-guided" in summary and "![" in summary


def test_different_models_match_by_position_and_keep_both_names(two_runs: tuple[Path, Path]) -> None:
    base, other = (hs.load_results(p) for p in two_runs)
    renamed = copy.copy(other)
    renamed.per_layer = other.per_layer.assign(layer=["a.conv", "b.conv", "head"])
    table = compare_runs(base, renamed).set_index("layer")
    assert list(table.index) == ["0 / a.conv", "2 / b.conv", "last layer", "overall"]
    assert tuple(table.loc["last layer", ["baseline_layer", "textguided_layer"]]) == ("6", "head")
    same = compare_runs(base, other).set_index("layer")
    assert table.loc["overall", "ratio"] == pytest.approx(same.loc["overall", "ratio"])


def test_layers_match_by_position_and_last_with_last() -> None:
    assert match_layers(["c1", "c2", "fc"], ["c1", "c2", "proj", "head"]) == [("c1", "c1"), ("c2", "c2"), ("fc", "head")]
    with pytest.raises(ValueError, match="at least one layer"):
        match_layers([], ["fc"])


def test_compare_command_prints_table_and_writes_csv(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    csv = tmp_path / "imp.csv"
    result = runner.invoke(app, ["compare", str(two_runs[0]), str(two_runs[1]), "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(csv, dtype=str)
    assert {"baseline_layer", "textguided_layer"} <= set(table.columns)
    assert list(table["layer"]) == ["0", "2", "last layer", "overall"]
    assert table.set_index("layer").loc["last layer", "baseline_layer"] == "6"
    assert (table["ratio"].astype(float) > 0).all()
    assert "improvement" in result.stdout


def test_report_command_and_its_errors(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["report", str(two_runs[0]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.html").is_file()
    missing = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert missing.exit_code == 2
    assert "not a campaign folder" in missing.output
    assert not (tmp_path / "r2").exists()


def test_plot_slots_put_classifiers_together() -> None:
    a = pd.DataFrame({"layer": ["backbone.c1", "backbone.c2", "fc"]})
    b = pd.DataFrame({"layer": ["backbone.c1", "backbone.c2", "proj", "head"]})
    labels, slots = align_layers({"a": a, "b": b})
    assert labels == ["backbone.c1", "backbone.c2", "proj", "fc / head"]
    assert slots["a"].tolist() == [0, 1, 3] and slots["b"].tolist() == [0, 1, 2, 3]
    labels, _ = align_layers({"a": a})
    assert labels == ["backbone.c1", "backbone.c2", "fc"]  # no common dotted prefix across all three
    labels, _ = align_layers({"a": pd.DataFrame({"layer": ["m.c1", "m.c2", "m.fc"]})})
    assert labels == ["c1", "c2", "fc"]

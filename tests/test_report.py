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
    assert labels == ["c1", "c2", "fc"]  # a prefix most names share is dropped; fc keeps its name
    labels, _ = align_layers({"a": pd.DataFrame({"layer": ["m.c1", "m.c2", "m.fc"]})})
    assert labels == ["c1", "c2", "fc"]


@pytest.fixture(scope="module")
def weight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline model under another campaign: weight faults in bf16."""
    out = tmp_path_factory.mktemp("runs") / "weight"
    model = tiny_model()
    spec = hs.CampaignSpec(kind="weight", fmt="bf16", bits="exponent", n_faults=20, seed=0, only_correct=False)
    hs.run_campaign(model, tiny_data(model), spec, "cpu", out, progress=False)
    return out


@pytest.fixture(scope="module")
def ber_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two models at two bit-error rates each, the models recorded as `headstrong inject` does."""
    from headstrong.report.fault_models import record_model

    root = tmp_path_factory.mktemp("ber")
    base, other = tiny_model(), tiny_model()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    data = tiny_data(base)
    runs = []
    for name, model in (("fmnist-baseline", base), ("fmnist-text", other)):
        for p in (1e-3, 3e-2):
            out = root / f"{name}-{p:g}"
            spec = hs.CampaignSpec(kind="weight", fmt="int8", fault_model="ber", ber=p, n_faults=12, seed=0,
                                   only_correct=False, layers="6")
            hs.run_campaign(model, data, spec, "cpu", out, progress=False)
            record_model(out, f"runs/{name}/model.pt")
            runs.append(out)
    return runs


def test_compare_refuses_different_campaigns_and_names_what_differs(two_runs, weight_run) -> None:
    refused = runner.invoke(app, ["compare", str(two_runs[0]), str(weight_run)])
    assert refused.exit_code == 2
    assert "kind: neuron vs weight" in refused.output and "format: fp32 vs bf16" in refused.output
    assert "--force" in refused.output
    with pytest.raises(ValueError, match="kind: neuron vs weight"):
        compare_runs(hs.load_results(two_runs[0]), hs.load_results(weight_run))
    forced = runner.invoke(app, ["compare", str(two_runs[0]), str(weight_run), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "compared different campaigns" in forced.output


def test_compare_prints_each_layer_once_with_the_ratio_and_its_interval(two_runs) -> None:
    result = runner.invoke(app, ["compare", str(two_runs[0]), str(two_runs[1])])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    table = compare_runs(*(hs.load_results(p) for p in two_runs))
    for row in table.itertuples():
        if row.layer in ("last layer", "overall"):
            continue
        printed = [line for line in lines if line.split()[:1] == [row.layer]]
        assert len(printed) == 1 and printed[0].count(f" {row.layer} ") == 0  # the layer once, not three times
        assert f"{row.ratio:.3g}x [{row.ratio_ci_low:.3g}, {row.ratio_ci_high:.3g}]" in printed[0]
    last = table.set_index("layer").loc["last layer"]
    sentence = [line for line in lines if line.startswith("last layer: improvement")]
    assert sentence and f"{last.ratio:.3g}x [" in sentence[0]
    includes_one = last.ratio_ci_low <= 1 <= last.ratio_ci_high
    assert ("includes 1" in result.stdout) == (includes_one or any(
        r.ratio_ci_low <= 1 <= r.ratio_ci_high for r in table.itertuples()))


def test_headline_says_in_words_when_the_interval_includes_one() -> None:
    from headstrong.report.tables import comparison_rows, headline

    table = pd.DataFrame([
        {"layer": "last layer", "baseline_layer": "fc", "textguided_layer": "head", "baseline_delta_loss": 0.2,
         "textguided_delta_loss": 0.11, "ratio": 1.81, "ratio_ci_low": 0.59, "ratio_ci_high": 5.55},
        {"layer": "overall", "baseline_layer": "all", "textguided_layer": "all", "baseline_delta_loss": 0.3,
         "textguided_delta_loss": 0.1, "ratio": 3.0, "ratio_ci_low": 1.5, "ratio_ci_high": 6.0},
    ])
    assert headline(table) == ("last layer: improvement 1.81x [0.59, 5.55] (99% CI); the interval includes 1: "
                               "no clear difference between the two models")
    assert "text-guided model is more resilient" in headline(table, "overall")
    headings, rows = comparison_rows(table)
    assert rows[0][0] == "last layer (fc / head)" and rows[0][3:] == ["1.81x [0.59, 5.55]", "CI includes 1"]
    assert rows[1][4] == "text-guided better"


def test_report_has_no_long_floats_and_fits_the_page(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    runs = [hs.load_results(p) for p in two_runs]
    page = hs.report.build_report(runs, tmp_path / "rep", labels=["baseline", "text-guided"],
                                  comparison=compare_runs(*runs))
    summary = (tmp_path / "rep" / "summary.md").read_text()
    text = page.read_text()
    assert not re.search(r"\d\.\d{6,}", summary), re.search(r".{30}\d\.\d{6,}.{10}", summary)
    first = re.search(r"<table>(.*?)</table>", text).group(1)
    assert not re.search(r"\d\.\d{6,}", first)
    assert "<th>layer</th>" in first and "improvement<br>[99% CI]" in first and "baseline_delta_loss" not in first
    assert "max-width: 1100px" in text and "overflow-wrap: anywhere" in text
    assert text.index("<h2>Improvement") < text.index("<img") < text.index("<h2>baseline</h2>")  # figures before tables
    assert "grey: no fault was sampled" in text and "percentage points" in text and "in nats" in text


def test_report_rank_lists_layers_from_most_to_least_vulnerable(two_runs: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["report", str(two_runs[1]), "--rank"])
    assert result.exit_code == 0, result.output
    per_layer = hs.load_results(two_runs[1]).per_layer
    expected = per_layer.sort_values(["mismatch_rate", "delta_loss_mean"], ascending=False)["layer"].tolist()
    printed = [line.split()[1] for line in result.stdout.splitlines() if re.match(r"\s*\d+\s", line)]
    assert printed == [str(n) for n in expected]
    assert runner.invoke(app, ["report", str(two_runs[1])]).exit_code == 2  # neither --out nor --rank


def test_report_of_two_different_campaigns_has_no_improvement_table(tmp_path: Path, two_runs, weight_run) -> None:
    result = runner.invoke(app, ["report", str(two_runs[0]), str(weight_run), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "different campaigns" in result.output
    assert "<h2>Improvement" not in (tmp_path / "r" / "report.html").read_text()


def test_accuracy_vs_ber_names_curves_after_models_with_error_bars(tmp_path: Path, ber_runs: list[Path]) -> None:
    from headstrong.report.fault_models import accuracy_vs_ber, ber_points, model_name

    runs = [hs.load_results(p) for p in ber_runs]
    points = ber_points(runs, [p.name for p in ber_runs])
    assert list(dict.fromkeys(points["curve"])) == ["fmnist-baseline", "fmnist-text"]
    assert (points["accuracy_ci_low"] <= points["accuracy"]).all() and (points["accuracy"] <= points["accuracy_ci_high"]).all()
    assert (points["faults"] == 12).all()
    for path, run in zip(ber_runs, runs):
        per_fault = (run.records["faulty_pred"] == run.records["label"]).groupby(run.records["fault_id"]).mean()
        row = points.set_index("label").loc[path.name]
        assert row["accuracy"] == pytest.approx(per_fault.mean())
        half = 2.576 * per_fault.std(ddof=1) / len(per_fault) ** 0.5
        assert row["accuracy_ci_high"] == pytest.approx(min(1.0, per_fault.mean() + half))
    png = accuracy_vs_ber(runs, [p.name for p in ber_runs], tmp_path / "acc.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    (ber_runs[0] / "model.json").rename(tmp_path / "moved.json")
    try:
        assert model_name(runs[0]).startswith("Sequential ")  # no record: the class and the fingerprint's start
    finally:
        (tmp_path / "moved.json").rename(ber_runs[0] / "model.json")


def test_result_warnings_for_a_ber_run_without_bit_errors(tmp_path: Path) -> None:
    from headstrong.report.checks import result_warnings

    model = tiny_model()
    data = tiny_data(model)
    quiet = hs.CampaignSpec(kind="weight", fmt="int8", fault_model="ber", ber=1e-12, n_faults=8, seed=0, layers="6")
    warnings = result_warnings(hs.run_campaign(model, data, quiet, "cpu", tmp_path / "q", progress=False))
    assert any("drew no bit error in any of its 8 faults" in w for w in warnings)
    loud = quiet.replace(ber=0.05)
    assert not any("bit error" in w for w in result_warnings(hs.run_campaign(model, data, loud, "cpu", tmp_path / "l",
                                                                             progress=False)))

"""Campaigns, the CLI and the report with fault models other than a single flip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import headstrong as hs
from headstrong.cli.main import app
from headstrong.engine import inject_edits
from headstrong.faults.models import get_fault_model
from test_campaign_cli import SMALL, checkpoint  # noqa: F401  (module fixture)
from test_campaign_resume import one_thread, tiny_data, tiny_model  # noqa: F401  (autouse fixture)

runner = CliRunner()


def _run(out: Path | None, spec: hs.CampaignSpec, **kw: object) -> hs.campaign.CampaignResult:
    model = tiny_model()
    return hs.run_campaign(model, tiny_data(model), spec, "cpu", out, progress=False, batch_size=8,
                           chunk_size=16, **kw)


def test_stuck_at_campaign_stores_its_model_and_the_masked_share(tmp_path: Path) -> None:
    spec = hs.CampaignSpec(kind="weight", layers=("0", "6"), fmt="int8", n_faults=16, seed=1,
                           fault_model="stuck-at-1", only_correct=False)
    result = _run(tmp_path / "r", spec)
    assert result.manifest["spec"]["fault_model"] == "stuck-at-1"
    records = result.records
    assert "masked" in records.columns and 0 < records["masked"].mean() < 1
    # each record is the exact injector's outcome for its (site, image)
    model = tiny_model()
    x, y = tiny_data(model)
    rows = records.iloc[::7]
    sites = hs.FaultSet(list(rows["kind"]), list(rows["layer"]), torch.tensor(rows["index"].to_numpy()),
                        torch.tensor(rows["bit"].to_numpy().astype("int64")))
    for i, (_, row) in enumerate(rows.iterrows()):
        image = x[[int(row["sample"])]]
        logits, masked = inject_edits(model, image, sites[i : i + 1], "int8", fault_model="stuck-at-1")
        assert bool(masked[0, 0]) == bool(row["masked"])
        assert int(logits[0, 0].argmax()) == int(row["faulty_pred"])
        loss = torch.nn.functional.cross_entropy(logits[0], y[[int(row["sample"])]])
        assert float(loss) == pytest.approx(float(row["faulty_loss"]), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(("kind", "params"), [("weight", {"fault_model": "ber", "ber": 1e-3}),
                                              ("neuron", {"fault_model": "ber", "ber": 1e-3}),
                                              ("neuron", {"fault_model": "multi-site", "sites": 3}),
                                              ("neuron", {"fault_model": "multi-bit", "k": 2}),
                                              ("weight", {"fault_model": "metadata", "fmt": "bfp8_16"})])
def test_campaigns_are_deterministic_and_resume(tmp_path: Path, kind: str, params: dict) -> None:
    spec = hs.CampaignSpec(kind=kind, layers=("0", "2"), n_faults=16, seed=4, only_correct=False, **params)
    first = _run(tmp_path / "a", spec)
    again = _run(tmp_path / "b", spec)
    assert first.records.equals(again.records)
    assert first.manifest["spec"]["fault_model"] == params["fault_model"]
    sorted((tmp_path / "a" / "chunks").glob("*.parquet"))[-1].unlink()  # as if killed before the last chunk
    assert _run(tmp_path / "a", spec).records.equals(first.records)
    assert not first.records["masked"].all()


def test_flip_campaigns_keep_their_manifest() -> None:
    assert "fault_model" not in hs.CampaignSpec().to_dict()  # runs made before fault models resume
    assert hs.CampaignSpec.from_dict({"fault_model": "ber", "ber": 1e-7}).to_dict()["ber"] == 1e-7


@pytest.mark.parametrize(("options", "message"), [
    ({"fault_model": "stuck-at-2"}, "unknown fault model 'stuck-at-2'; expected one of flip, stuck-at-0, stuck-at-1"),
    ({"fault_model": "ber", "ber": 2.0}, r"p must be in \[0, 1\]"),
    ({"fault_model": "ber"}, "fault model 'ber' needs ber"),
    ({"fault_model": "multi-bit", "k": 9, "fmt": "int8"}, "k=9 is larger than int8's 8 bits; allowed k: 1..8"),
    ({"fault_model": "metadata", "fmt": "fp32"}, "metadata faults need a format with metadata; fp32 has none"),
    ({"fault_model": "stuck-at-1", "ber": 1e-7}, "ber is only for fault model 'ber'"),
])
def test_spec_refuses_bad_fault_models(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hs.CampaignSpec(**options)


def test_cli_runs_fault_models_and_the_report_plots_them(tmp_path: Path, checkpoint: Path) -> None:  # noqa: F811
    outs = []
    for args in (["--fault-model", "ber", "--ber", "1e-4"], ["--fault-model", "ber", "--ber", "1e-2"],
                 ["--fault-model", "stuck-at-1", "--fmt", "int8", "--bits", "all"]):
        out = tmp_path / "-".join(a.strip("-") for a in args)
        result = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--kind", "weight", "--layers", "head",
                                     *[a for a in args], "--out", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(out)
    assert hs.load_results(outs[0]).manifest["spec"]["ber"] == 1e-4
    report = runner.invoke(app, ["report", *map(str, outs), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "rep" / "accuracy_vs_ber.png").stat().st_size > 0
    assert (tmp_path / "rep" / "masked_share.png").stat().st_size > 0
    bad = runner.invoke(app, ["inject", str(checkpoint), *SMALL, "--fault-model", "ber", "--ber", "-1",
                              "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "p must be in [0, 1]" in bad.output
    assert not (tmp_path / "bad").exists()


def test_report_points_are_accuracies_per_rate(tmp_path: Path) -> None:
    from headstrong.report.fault_models import ber_points

    runs = [_run(tmp_path / f"r{p}", hs.CampaignSpec(kind="weight", layers="0", n_faults=8, seed=0,
                                                     only_correct=False, fault_model="ber", ber=p))
            for p in (1e-4, 0.2)]
    points = ber_points(runs, ["low", "high"])
    assert list(points["p"]) == [1e-4, 0.2] and points["curve"].nunique() == 1  # one model: one curve
    for run, accuracy in zip(runs, points["accuracy"]):
        assert accuracy == pytest.approx((run.records["faulty_pred"] == run.records["label"]).mean())
    assert get_fault_model("ber", p=0.2).params == {"p": 0.2}

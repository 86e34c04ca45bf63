"""Stratified campaigns through ``hs.run_campaign``: rounds, weights, resume, budget and bad input."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import headstrong as hs
from tests._models import build, images

SPEC = hs.CampaignSpec(layers=["fc1", "fc2"], margin=0.02, only_correct=False, seed=3)


@pytest.fixture(scope="module")
def data() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.set_num_threads(1)
    return build("cnn"), images(24, seed=5)


def test_a_campaign_sized_by_margin_is_stratified_and_stops_at_the_margin(data, tmp_path: Path) -> None:
    model, xy = data
    assert SPEC.stratified and not SPEC.replace(n_faults=10).stratified  # n_faults stays uniform
    rounds: list[dict] = []
    result = hs.run_campaign(model, xy, SPEC, out=tmp_path / "run", progress=False,
                             on_round=lambda number, steps: rounds.append(steps))
    records = result.records
    assert {"stratum", "weight"} <= set(records.columns)
    assert set(records["stratum"].astype(str)) == {f"{r.layer}/{r.bit}" for r in records.itertuples()}
    assert np.allclose(records["weight"], 1 / 32) and records["fault_id"].is_unique
    assert rounds[0]["fc1"].status == "pilot" and len(rounds) >= 3  # pilot, Neyman rounds, then done
    assert all(step.status == "reached" for step in rounds[-1].values())
    row = result.per_layer.set_index("layer")
    half = (row["mismatch_ci_high"] - row["mismatch_ci_low"]) / 2
    assert (half <= SPEC.margin).all()
    assert (row["n_faults"] == records.groupby("layer")["fault_id"].nunique()).all()
    spent = records.groupby(["layer", "bit"]).size()
    assert spent.loc["fc1"].max() > 2 * spent.loc["fc1"].min()  # deliberately unequal allocation
    for name, group in records.groupby("layer"):  # per_layer is the exact design-weighted value
        by_bit = group.groupby("bit")
        mismatch = (group["golden_pred"] != group["faulty_pred"]).groupby(group["bit"]).mean()
        assert row.loc[name, "mismatch_rate"] == pytest.approx(mismatch.mean())
        assert row.loc[name, "delta_loss_mean"] == pytest.approx(by_bit["delta_loss"].mean().mean())


def test_interrupted_between_rounds_resumes_to_the_same_records(data, tmp_path: Path) -> None:
    model, xy = data
    whole = hs.run_campaign(model, xy, SPEC, out=tmp_path / "whole", progress=False)

    def stop(number: int, steps: dict) -> None:
        if number == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hs.run_campaign(model, xy, SPEC, out=tmp_path / "cut", progress=False, on_round=stop)
    sorted((tmp_path / "cut" / "chunks").glob("*.parquet"))[-1].unlink()  # and a chunk lost
    again = hs.run_campaign(model, xy, SPEC, out=tmp_path / "cut", progress=False)
    assert again.records.equals(whole.records)
    other = hs.run_campaign(model, xy, SPEC, out=None, progress=False, batch_size=7, chunk_size=100)
    assert other.per_layer["n_faults"].tolist() == whole.per_layer["n_faults"].tolist()


def test_a_spent_budget_is_said(data) -> None:
    model, xy = data
    spec = SPEC.replace(layers="fc2", target="delta_loss", margin=0.001, max_faults=600)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hs.run_campaign(model, xy, spec, progress=False)
    assert any("max_faults=600 spent" in str(w.message) and "fc2" in str(w.message) for w in caught)
    assert 512 <= result.per_layer["n_faults"].iloc[0] <= 600


@pytest.mark.parametrize(("changes", "message"), [
    ({"sampling": "random"}, "unknown sampling 'random'; expected one of stratified, uniform"),
    ({"target": "accuracy"}, "unknown target 'accuracy'; expected one of mismatch, delta_loss"),
    ({"margin": 1.0}, r"margin must be a number in the open interval \(0, 1\)"),
    ({"sampling": "stratified", "fault_model": "ber", "ber": 1e-6}, "single-site fault model"),
    ({"sampling": "stratified", "n_faults": 100}, "leave n_faults out"),
    ({"sampling": "uniform", "max_faults": 100}, "max_faults is the budget of a stratified campaign"),
])
def test_bad_input_names_what_is_allowed(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SPEC.replace(**changes)


def test_max_faults_below_the_pilot_is_refused(data) -> None:
    model, xy = data
    with pytest.raises(ValueError, match=r"max_faults=100 is below the pilot of layer 'fc1' \(16 faults x 32"):
        hs.run_campaign(model, xy, SPEC.replace(max_faults=100), progress=False)


def test_cli_runs_a_stratified_campaign_and_says_the_faults_per_layer(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from headstrong.cli.main import app
    from headstrong.train import save_checkpoint

    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", num_classes=10, in_chans=1, small_input=True)
    checkpoint = save_checkpoint(tmp_path / "model.pt", model)
    args = ["inject", str(checkpoint), "--dataset", "fashion-mnist", "--max-images", "32", "--all-images",
            "--layers", "head", "--sampling", "stratified", "--target", "mismatch", "--margin", "0.01",
            "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"round 1: .*half-width [\d.e-]+ vs target 0\.01", result.stderr)
    spent = hs.load_results(tmp_path / "run").per_layer["n_faults"].iloc[0]
    assert re.search(rf"head\s+{spent:,}\s+[\d.e-]+\s+0\.01\s+reached", result.stdout)
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "bad"), "--target", "loss"])
    assert bad.exit_code == 2 and "unknown target 'loss'; expected one of mismatch, delta_loss" in bad.output


@pytest.mark.slow
def test_ray_runs_the_same_rounds_and_records(data) -> None:
    pytest.importorskip("ray")
    model, xy = data
    spec = SPEC.replace(layers="fc2")
    local = hs.run_campaign(model, xy, spec, progress=False)
    on_ray = hs.run_campaign(model, xy, spec, progress=False, backend="ray", num_workers=2)
    assert on_ray.records.equals(local.records)

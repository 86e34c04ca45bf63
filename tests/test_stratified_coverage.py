"""Intervals that hold: stratified campaigns' 99% intervals cover the exact, enumerated values.

A small model's layer is enumerated exactly: every element x bit x image through ``hs.inject``,
golden logits from the slow reference. Then 100 independent stratified campaigns (pilot, Neyman
rounds, stopping rule: ``headstrong.faults.strata``, the code the campaign runs) draw their faults
and read each outcome from that table, fault k of a layer meeting evaluation image k mod the
number of images as in a campaign; ``metrics.summarize`` gives each campaign's per-layer
intervals. At least 95 of 100 must cover the exact mismatch rate and the exact mean ΔLoss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import headstrong as hs
from headstrong.faults import strata
from headstrong.metrics import summarize
from tests._models import build, images
from tests._reference import reference_golden

LAYER = "fc1"
N_IMAGES = 12
RUNS = 100


@dataclass(frozen=True)
class Table:
    """Every (element, bit, image) outcome of one layer, and the exact per-layer figures."""

    delta_loss: np.ndarray  # [elements, bits, images]
    mismatch: np.ndarray
    nonfinite: np.ndarray
    layer: strata.Strata

    @property
    def exact_rate(self) -> float:
        return float(self.mismatch.mean())

    @property
    def exact_mean(self) -> float:
        return float(self.delta_loss[~self.nonfinite].mean())


def enumerate_layer(fmt: str) -> Table:
    model = build("cnn")
    x, y = images(N_IMAGES, seed=5)
    bits = hs.formats.get(fmt).bits
    golden = reference_golden(model, x, fmt)
    elements = 32  # fc1's outputs
    index, bit = torch.meshgrid(torch.arange(elements), torch.arange(bits), indexing="ij")
    faults = hs.FaultSet("neuron", LAYER, index.flatten(), bit.flatten())
    logits = hs.inject(model, x, faults, fmt=fmt, range_detector=True)  # [faults, images, classes]
    g_loss = F.cross_entropy(golden, y, reduction="none")
    f_loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(faults)), reduction="none").view(len(faults), -1)
    shape = (elements, bits, N_IMAGES)
    nonfinite = ~torch.isfinite(logits).all(dim=-1)
    return Table((f_loss - g_loss).abs().view(shape).numpy().astype(np.float64),
                 (logits.argmax(-1) != golden.argmax(-1)).view(shape).numpy(),
                 nonfinite.view(shape).numpy(), strata.Strata(LAYER, elements, tuple(range(bits))))


def stratified_campaign(table: Table, rule: strata.StoppingRule, seed: int) -> tuple[pd.DataFrame, str]:
    """One campaign's records, each outcome read from the table; and how it stopped."""
    layer = table.layer
    parts: list[pd.DataFrame] = []
    stats = strata.StratumStats.empty(len(layer))
    spent = 0
    for round_index in range(100):
        step = strata.allocate(rule, layer, stats)
        if step.done:
            return pd.concat(parts, ignore_index=True), step.status
        generator = torch.Generator().manual_seed(seed * 1000 + round_index)
        index, bit = (t.numpy() for t in strata.draw_round(layer, step.counts, generator))
        image = (spent + np.arange(len(index))) % N_IMAGES
        spent += len(index)
        parts.append(pd.DataFrame({
            "layer": LAYER, "bit": bit, "stratum": [f"{LAYER}/{b}" for b in bit], "weight": 1.0 / len(layer),
            "delta_loss": table.delta_loss[index, bit, image], "golden_pred": 0,
            "faulty_pred": table.mismatch[index, bit, image].astype(int), "top2_diff": 0.0,
            "nonfinite": table.nonfinite[index, bit, image],
        }))
        records = pd.concat(parts, ignore_index=True)
        stats = layer.stats(records["bit"], records["delta_loss"], records["faulty_pred"] != 0, records["nonfinite"])
    raise AssertionError("a campaign did not stop within 100 rounds")


@pytest.fixture(scope="module", params=["fp32", "int8"])
def table(request: pytest.FixtureRequest) -> Table:
    torch.set_num_threads(1)
    return enumerate_layer(request.param)


@pytest.mark.parametrize(("target", "margin"), [("mismatch", 0.02), ("delta_loss", 0.1)])
def test_stratified_99_intervals_cover_the_exact_values(table: Table, target: str, margin: float) -> None:
    rule = strata.StoppingRule(target=target, margin=margin, confidence=0.99)
    rate_hits = mean_hits = 0
    spent = []
    for seed in range(RUNS):
        records, status = stratified_campaign(table, rule, seed)
        row = summarize(records, by=("layer",), confidence=0.99).iloc[0]
        rate_hits += row["mismatch_ci_low"] <= table.exact_rate <= row["mismatch_ci_high"]
        mean_hits += row["delta_loss_ci_low"] <= table.exact_mean <= row["delta_loss_ci_high"]
        spent.append(len(records))
        assert status == "reached"
    assert rate_hits >= 95, f"mismatch: {rate_hits}/{RUNS} intervals cover the exact rate {table.exact_rate:.4f}"
    assert mean_hits >= 95, f"ΔLoss: {mean_hits}/{RUNS} intervals cover the exact mean {table.exact_mean:.4f}"
    assert np.median(spent) < table.delta_loss.size  # cheaper than enumerating the layer


def test_a_campaigns_records_are_the_tables_entries(table: Table) -> None:
    """The campaigns above read the table; a real stratified campaign measures the same outcomes."""
    model = build("cnn")
    x, y = images(N_IMAGES, seed=5)
    fmt = "int8" if len(table.layer) == 8 else "fp32"
    spec = hs.CampaignSpec(layers=LAYER, fmt=fmt, margin=0.05, only_correct=False, seed=1)
    records = hs.run_campaign(model, (x, y), spec, progress=False).records
    at = (records["index"].to_numpy(), records["bit"].to_numpy(), records["sample"].to_numpy())
    assert np.allclose(records["delta_loss"], table.delta_loss[at], rtol=1e-4, atol=1e-5)
    assert np.mean((records["golden_pred"] != records["faulty_pred"]).to_numpy() == table.mismatch[at]) > 0.99


def coverage_table(runs: int) -> pd.DataFrame:
    """The docs' coverage table: both formats and targets, ``runs`` campaigns each."""
    rows = []
    for fmt in ("fp32", "int8"):
        exact = enumerate_layer(fmt)
        for target, margin in (("mismatch", 0.02), ("delta_loss", 0.1)):
            rule = strata.StoppingRule(target=target, margin=margin, confidence=0.99)
            rate = mean = 0
            spent = []
            for seed in range(runs):
                records, _ = stratified_campaign(exact, rule, seed)
                row = summarize(records, by=("layer",)).iloc[0]
                rate += row["mismatch_ci_low"] <= exact.exact_rate <= row["mismatch_ci_high"]
                mean += row["delta_loss_ci_low"] <= exact.exact_mean <= row["delta_loss_ci_high"]
                spent.append(len(records))
            rows.append({"fmt": fmt, "target": target, "margin": margin, "runs": runs,
                         "exact_mismatch": exact.exact_rate, "mismatch_coverage": rate / runs,
                         "exact_delta_loss": exact.exact_mean, "delta_loss_coverage": mean / runs,
                         "median_faults": float(np.median(spent)), "population": exact.delta_loss.size})
    return pd.DataFrame(rows)


if __name__ == "__main__":  # python -m tests.test_stratified_coverage 1000
    import sys

    torch.set_num_threads(1)
    print(coverage_table(int(sys.argv[1]) if len(sys.argv) > 1 else RUNS).to_string(index=False, float_format="%.4g"))

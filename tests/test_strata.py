"""Stratified sampling: weighted summaries equal the exact weighted values, allocation and its errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from headstrong import metrics
from headstrong.faults import strata
from headstrong.metrics import summarize


def unequal_records(seed: int = 0) -> tuple[pd.DataFrame, dict[int, dict[str, float]]]:
    """One layer, four bit strata sampled 6, 60, 240 and 15 times; each stratum's plain figures."""
    rng = np.random.default_rng(seed)
    frames, exact = [], {}
    for bit, n, scale, p in [(0, 6, 0.01, 0.0), (7, 60, 0.5, 0.1), (30, 240, 4.0, 0.6), (31, 15, 1.0, 0.3)]:
        delta = rng.exponential(scale, n)
        golden = rng.integers(0, 10, n)
        faulty = np.where(rng.random(n) < p, (golden + 1) % 10, golden)
        nonfinite = np.zeros(n, bool)
        if bit == 30:
            nonfinite[:3] = True
            delta[:3] = np.inf
        top2 = rng.uniform(0, 100, n)
        frames.append(pd.DataFrame({"layer": "conv", "bit": bit, "stratum": f"conv/{bit}", "weight": 0.25,
                                    "fault_id": np.arange(n) + 1000 * bit, "delta_loss": delta,
                                    "golden_pred": golden, "faulty_pred": faulty, "top2_diff": top2,
                                    "nonfinite": nonfinite}))
        finite = delta[~nonfinite]
        exact[bit] = {"mean": finite.mean(), "finite": len(finite) / n, "rate": (golden != faulty).mean(),
                      "top2": top2.mean(), "nonfinite": nonfinite.mean()}
    return pd.concat(frames, ignore_index=True), exact


def test_unequal_allocation_per_layer_equals_the_exact_weighted_value() -> None:
    records, exact = unequal_records()
    row = summarize(records).iloc[0]
    w = 0.25
    covered = sum(w * e["finite"] for e in exact.values())
    assert row["delta_loss_mean"] == pytest.approx(sum(w * e["finite"] * e["mean"] for e in exact.values()) / covered)
    assert row["mismatch_rate"] == pytest.approx(sum(w * e["rate"] for e in exact.values()))
    assert row["top2_diff_mean"] == pytest.approx(sum(w * e["top2"] for e in exact.values()))
    assert row["nonfinite_rate"] == pytest.approx(sum(w * e["nonfinite"] for e in exact.values()))
    assert row["n"] == len(records) == row["n_faults"]
    assert row["delta_loss_ci_low"] < row["delta_loss_mean"] < row["delta_loss_ci_high"]
    assert row["mismatch_ci_low"] < row["mismatch_rate"] < row["mismatch_ci_high"]
    plain = summarize(records.drop(columns=["stratum", "weight"])).iloc[0]  # what a plain mean would say
    assert abs(plain["mismatch_rate"] - row["mismatch_rate"]) > 0.05
    per_bit = summarize(records, by=("layer", "bit")).set_index("bit")
    for bit, e in exact.items():  # one stratum per group: the plain figures of that stratum
        assert per_bit.loc[bit, "delta_loss_mean"] == pytest.approx(e["mean"])
        assert per_bit.loc[bit, "mismatch_rate"] == pytest.approx(e["rate"])


def test_weighted_interval_math_by_hand() -> None:
    records, _ = unequal_records(seed=3)
    row = summarize(records, confidence=0.95).iloc[0]
    groups = [g for _, g in records.groupby("bit")]
    finite = [g["delta_loss"][~g["nonfinite"]].to_numpy() for g in groups]
    n = np.array([len(g) for g in groups], float)
    f = np.array([len(v) for v in finite]) / n
    ratio = sum(v.sum() / m for v, m in zip(finite, n)) / f.sum()
    s2 = np.array([np.var(np.concatenate([v - ratio, np.zeros(int(m) - len(v))]), ddof=1) for v, m in zip(finite, n)])
    parts = (0.25**2 * s2 / n) / (0.25 * f.sum()) ** 2
    df = parts.sum() ** 2 / (parts**2 / (n - 1)).sum()
    q, se = stats.t.ppf(0.975, df), math.sqrt(parts.sum())
    residuals = [np.concatenate([v - ratio, np.zeros(int(m) - len(v))]) for v, m in zip(finite, n)]
    m3 = np.array([((e - e.mean()) ** 3).mean() for e in residuals])
    gamma = ((0.25**3 * m3 / n**2).sum() / (0.25 * f.sum()) ** 3) / se**3
    shift = se * min(max(gamma * (2 * q * q + 1) / 6, -q / 2), q / 2)  # Hall's skewness correction
    assert row["delta_loss_mean"] == pytest.approx(ratio)
    assert (row["delta_loss_ci_low"], row["delta_loss_ci_high"]) == pytest.approx(
        (ratio - q * se + shift, ratio + q * se + shift))
    assert shift > 0  # exponential ΔLoss: right-skewed, the interval moves up
    assert row["delta_loss_std"] / math.sqrt(row["n_finite"]) == pytest.approx(math.sqrt(parts.sum()))


def test_one_stratum_is_the_wilson_interval_exactly() -> None:
    k, n = 7, 90
    got = strata.stratified_rate([1.0], strata.StratumStats.from_arrays(np.zeros(n), 1, np.zeros(n),
                                                                        np.arange(n) < k), 0.99)
    assert (got.estimate, got.low, got.high) == pytest.approx(metrics.wilson_interval(k, n, 0.99))


def test_uniform_records_without_weights_keep_their_figures() -> None:
    records, _ = unequal_records()
    plain = records.drop(columns=["stratum", "weight"])
    row = summarize(plain, by=()).iloc[0]
    finite = plain["delta_loss"][~plain["nonfinite"]]
    mean, std, lo, hi = metrics.normal_interval(finite.sum(), (finite**2).sum(), len(finite))
    assert (row["delta_loss_mean"], row["delta_loss_ci_low"], row["delta_loss_ci_high"]) == (mean, lo, hi)
    assert row["n_faults"] == len(plain)
    with pytest.raises(ValueError, match="both 'stratum' and 'weight'"):
        summarize(records.drop(columns=["weight"]))


def test_is_b_bit_shares_are_the_campaigns_neyman_shares() -> None:
    harm = np.array([0.0, 0.0, 0.2, 1.0])
    shares = strata.allocation_shares(np.ones(4), harm, 0.1)
    shaped = harm + 0.1 * harm.mean()
    assert shares == pytest.approx(shaped / shaped.sum())
    assert np.all(shares > 0)  # a stratum with no measured harm keeps a floor share
    assert strata.allocation_shares([1, 1, 2], np.zeros(3)) == pytest.approx([0.25, 0.25, 0.5])


def _stats(layer: strata.Strata, p: np.ndarray, n: np.ndarray, seed: int = 0) -> strata.StratumStats:
    rng = np.random.default_rng(seed)
    code = np.repeat(np.arange(len(layer)), n)
    hit = rng.random(len(code)) < p[code]
    return strata.StratumStats.from_arrays(code, len(layer), hit * rng.exponential(1.0, len(code)), hit)


def test_allocation_pilot_then_neyman_then_stop() -> None:
    layer = strata.Strata("conv", 100, tuple(range(8)))
    rule = strata.StoppingRule(target="mismatch", margin=0.02, confidence=0.99, pilot=8)
    first = strata.allocate(rule, layer, strata.StratumStats.empty(8))
    assert first.status == "pilot" and list(first.counts) == [8] * 8
    p = np.array([0, 0, 0, 0, 0, 0, 0.5, 0.9])
    n = first.counts.copy()
    for _ in range(30):
        step = strata.allocate(rule, layer, _stats(layer, p, n))
        if step.done:
            break
        assert step.counts.sum() <= max(n.sum(), 8)  # a round at most doubles what was spent
        n = n + step.counts
    assert step.status == "reached" and step.half_width <= 0.02
    assert n[6] > n[0] and n.min() > 8  # harmful strata get more, harmless ones keep a floor
    again = strata.allocate(rule, layer, _stats(layer, p, n))  # a pure function of the records
    assert again.status == step.status and again.half_width == step.half_width


def test_budget_is_reported_and_bad_input_is_refused() -> None:
    layer = strata.Strata("fc", 10, (0, 1, 2, 3))
    rule = strata.StoppingRule(target="delta_loss", margin=0.001, max_faults=64, pilot=16)
    step = strata.allocate(rule, layer, _stats(layer, np.full(4, 0.5), np.full(4, 16)))
    assert step.status == "budget" and step.done
    with pytest.raises(ValueError, match="below the pilot"):
        strata.allocate(strata.StoppingRule(max_faults=63, pilot=16), layer, strata.StratumStats.empty(4))
    with pytest.raises(ValueError, match="unknown target 'accuracy'; expected one of mismatch, delta_loss"):
        strata.StoppingRule(target="accuracy")
    for margin in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="margin must be a number in the open interval"):
            strata.StoppingRule(margin=margin)


def test_draw_round_counts_and_determinism() -> None:
    layer = strata.Strata("conv", 50, (3, 9, 31))
    counts = np.array([5, 0, 12])
    index, bits = strata.draw_round(layer, counts, torch.Generator().manual_seed(1))
    again = strata.draw_round(layer, counts, torch.Generator().manual_seed(1))
    assert torch.equal(index, again[0]) and torch.equal(bits, again[1])
    assert (bits == 3).sum() == 5 and (bits == 31).sum() == 12 and int(index.max()) < 50


def test_a_fault_that_met_several_images_counts_once() -> None:
    rng = np.random.default_rng(2)
    faults, images = 40, 5
    fault = np.repeat(np.arange(faults), images)
    bit = np.repeat(rng.integers(0, 2, faults), images)
    per_fault = rng.exponential(1.0, faults)  # a fault's harm is shared by all its images
    delta = per_fault[fault] + rng.normal(0, 0.01, len(fault))
    frame = pd.DataFrame({"layer": "fc", "bit": bit, "stratum": bit, "weight": 0.5, "fault_id": fault,
                          "delta_loss": delta, "golden_pred": 0, "faulty_pred": (delta > 1).astype(int),
                          "top2_diff": 0.0, "nonfinite": False})
    row = summarize(frame).iloc[0]
    assert row["n"] == faults * images and row["n_faults"] == faults
    means = frame.groupby("fault_id").agg(bit=("bit", "first"), delta=("delta_loss", "mean"))
    by_bit = means.groupby("bit")["delta"]
    se = math.sqrt(sum(0.25 * v / c for v, c in zip(by_bit.var(), by_bit.count())))
    assert row["delta_loss_std"] / math.sqrt(row["n_finite"]) == pytest.approx(se)  # faults, not pairs

"""Metrics against hand-computed cases and scipy; batched merging equals one pass."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from headstrong import metrics
from headstrong.metrics import summarize


def records(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    delta = rng.exponential(0.5, n)
    nonfinite = np.zeros(n, bool)
    nonfinite[[3, 17]] = True
    delta[3], delta[17] = np.nan, np.inf
    golden = rng.integers(0, 10, n)
    faulty = np.where(rng.random(n) < 0.3, (golden + 1) % 10, golden)
    return pd.DataFrame({"layer": np.repeat(["conv1", "fc"], n // 2), "bit": np.tile([30, 22, 0], n // 3),
                         "delta_loss": delta, "golden_pred": golden, "faulty_pred": faulty,
                         "top2_diff": rng.uniform(0, 100, n), "nonfinite": nonfinite})


def test_delta_loss_by_hand() -> None:
    frame = pd.DataFrame({"delta_loss": [1.0, 2.0, 3.0, 4.0], "golden_pred": 0, "faulty_pred": 0,
                          "top2_diff": 0.0, "nonfinite": False})
    out = summarize(frame, by=()).iloc[0]
    std = math.sqrt(5 / 3)  # sample std of 1..4
    assert out["delta_loss_mean"] == pytest.approx(2.5)
    assert out["delta_loss_std"] == pytest.approx(std)
    assert out["delta_loss_ci_low"] == pytest.approx(2.5 - 2.576 * std / 2)
    assert out["delta_loss_ci_high"] == pytest.approx(2.5 + 2.576 * std / 2)
    assert out["delta_loss_median"] == pytest.approx(2.5)


def test_nonfinite_outputs_are_left_out_of_the_mean_and_counted() -> None:
    frame = pd.DataFrame({"delta_loss": [1.0, math.nan, math.inf, 3.0], "nonfinite": [False, True, False, False],
                          "golden_pred": [1, 1, 1, 1], "faulty_pred": [1, 2, 1, 1], "top2_diff": [10.0, 20.0, 30.0, 40.0]})
    out = summarize(frame, by=()).iloc[0]
    assert out["delta_loss_mean"] == pytest.approx(2.0) and out["n_finite"] == 2
    assert out["nonfinite_rate"] == pytest.approx(0.5)
    assert out["mismatch_rate"] == pytest.approx(0.25) and out["n"] == 4 and out["n_faults"] == 4
    assert out["top2_diff_mean"] == pytest.approx(25.0)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (17, 400), (250, 1000)])
@pytest.mark.parametrize("confidence", [0.99, 0.95])
def test_wilson_interval_matches_scipy(k: int, n: int, confidence: float) -> None:
    rate, lo, hi = metrics.wilson_interval(k, n, confidence)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert rate == pytest.approx(k / n)
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


def test_z_values() -> None:
    assert metrics.z_value(0.99) == 2.576 and metrics.z_value(0.95) == 1.96
    assert metrics.z_value(0.99, exact=True) == pytest.approx(stats.norm.ppf(0.995))
    with pytest.raises(ValueError, match="confidence"):
        metrics.z_value(1.5)


def test_mean_interval_matches_scipy_normal_interval() -> None:
    values = records()["delta_loss"].to_numpy()
    values = values[np.isfinite(values)]
    mean, std, lo, hi = metrics.normal_interval(values.sum(), (values**2).sum(), len(values))
    sem = stats.sem(values)
    assert mean == pytest.approx(values.mean()) and std == pytest.approx(values.std(ddof=1))
    assert (lo, hi) == pytest.approx((mean - 2.576 * sem, mean + 2.576 * sem))


def test_summarize_per_layer_and_bit() -> None:
    frame = records()
    per_layer = summarize(frame)
    assert list(per_layer["layer"]) == ["conv1", "fc"]
    assert list(per_layer.columns[:11]) == ["layer", "n", "delta_loss_mean", "delta_loss_ci_low", "delta_loss_ci_high",
                                            "delta_loss_median", "mismatch_rate", "mismatch_ci_low",
                                            "mismatch_ci_high", "top2_diff_mean", "nonfinite_rate"]
    conv = frame[frame["layer"] == "conv1"]
    finite = conv["delta_loss"][~conv["nonfinite"] & np.isfinite(conv["delta_loss"])]
    row = per_layer.iloc[0]
    assert row["n"] == 30 and row["delta_loss_mean"] == pytest.approx(finite.mean())
    assert row["delta_loss_median"] == pytest.approx(finite.median())
    assert row["nonfinite_rate"] == pytest.approx(2 / 30)
    assert row["mismatch_rate"] == pytest.approx((conv["golden_pred"] != conv["faulty_pred"]).mean())
    per_bit = summarize(frame, by=("layer", "bit"))
    assert len(per_bit) == 6 and per_bit["n"].sum() == 60
    with pytest.raises(ValueError, match="cannot group"):
        summarize(frame, by=("kind",))
    with pytest.raises(ValueError, match="lack columns"):
        summarize(frame.drop(columns=["top2_diff"]))


def test_improvement_by_hand() -> None:
    base = pd.DataFrame({"layer": ["conv1", "fc"], "delta_loss_mean": [2.0, 8.0], "delta_loss_std": [1.0, 2.0],
                         "n_finite": [100, 100], "delta_loss_ci_low": [0, 0], "delta_loss_ci_high": [0, 0]})
    text = pd.DataFrame({"layer": ["conv1", "backbone.fc", "head"], "delta_loss_mean": [1.0, 3.0, 1.0],
                         "delta_loss_std": [0.5, 1.0, 0.4], "n_finite": [100, 100, 100],
                         "delta_loss_ci_low": [0, 0, 0], "delta_loss_ci_high": [0, 0, 0]})
    out = metrics.improvement(base, text).set_index("layer")
    assert list(out.index) == ["conv1", "last layer", "overall"]
    assert out.loc["conv1", "ratio"] == pytest.approx(2.0)
    rel = math.sqrt((0.1 / 2.0) ** 2 + (0.05 / 1.0) ** 2)
    assert out.loc["conv1", "ratio_ci_low"] == pytest.approx(2.0 * math.exp(-2.576 * rel))
    assert out.loc["last layer", "ratio"] == pytest.approx(8.0)  # fc vs head
    assert out.loc["overall", "ratio"] == pytest.approx(5.0 / (5.0 / 3))
    chosen = metrics.improvement(base, text, last_layer=("fc", "backbone.fc")).set_index("layer")
    assert chosen.loc["last layer", "ratio"] == pytest.approx(8.0 / 3.0)
    from_records = metrics.improvement(records(seed=1), records(seed=4))
    assert list(from_records["layer"]) == ["conv1", "fc", "last layer", "overall"]
    with pytest.raises(ValueError, match="last layer"):
        metrics.improvement(base, text, last_layer=("nope", "head"))

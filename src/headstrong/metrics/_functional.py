"""The math shared by the metric classes and ``summarize``: one definition, two faces."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from headstrong.faults.strata import StratumStats, stratified_mean, stratified_rate

DEFAULT_CONFIDENCE = 0.99


def z_value(confidence: float = DEFAULT_CONFIDENCE, exact: bool = False) -> float:
    """Two-sided normal quantile; rounded to three decimals (2.576 for 99%, as in DESIGN.md) unless exact."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return z if exact else round(z, 3)


def normal_interval(total: float, total_sq: float, n: int,
                    confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean, sample std and the normal interval ``mean ± z std / sqrt(n)`` from sums."""
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = total / n
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    var = max(total_sq - total * total / n, 0.0) / (n - 1)
    std = math.sqrt(var)
    half = z_value(confidence) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def wilson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """Rate ``k / n`` with the Wilson score interval (exact z, as scipy's ``proportion_ci``)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"successes must lie in 0..n, got k={k}, n={n}")
    z = z_value(confidence, exact=True)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def paired_rate_change(before: np.ndarray, after: np.ndarray,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """Change of a rate (accuracy) measured on the same items twice: ``(change, low, high)`` as
    shares, with a normal interval on the per-item differences (McNemar's pairing: items both
    runs agree on add nothing to the spread)."""
    a, b = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("a paired rate change needs the same non-empty set of items for both runs")
    diff = b.astype(float) - a.astype(float)
    mean = float(diff.mean())
    se = float(diff.std(ddof=1)) / math.sqrt(diff.size) if diff.size > 1 else 0.0
    z = z_value(confidence)
    return mean, mean - z * se, mean + z * se


def split_finite(delta_loss: np.ndarray, nonfinite: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Finite ΔLoss values of the finite outputs, and how many were left out as non-finite."""
    delta_loss = np.asarray(delta_loss, dtype=np.float64)
    bad = ~np.isfinite(delta_loss)
    if nonfinite is not None:
        bad |= np.asarray(nonfinite, dtype=bool)
    return delta_loss[~bad], int(bad.sum())


def summary_row(delta_loss: np.ndarray, mismatch: np.ndarray, top2_diff: np.ndarray,
                nonfinite: np.ndarray | None, confidence: float = DEFAULT_CONFIDENCE,
                stratum: np.ndarray | None = None, weight: np.ndarray | None = None,
                n_faults: int | None = None, fault: np.ndarray | None = None) -> dict[str, float]:
    """One group's summary, with the column names of ``summarize``.

    With ``stratum`` and ``weight`` (each record's stratum and that stratum's share of the uniform
    population) every figure is the design-weighted one (``headstrong.faults.strata``); without
    them, the plain figures of a uniform sample. ``fault``: each record's fault id (the
    intervals of a stratified sample count a fault that met several images once).
    """
    if stratum is not None and weight is not None:
        return _weighted_row(delta_loss, mismatch, top2_diff, nonfinite, confidence, stratum, weight, n_faults, fault)
    finite, n_bad = split_finite(delta_loss, nonfinite)
    n = len(np.asarray(delta_loss))
    mean, std, lo, hi = normal_interval(float(finite.sum()), float((finite * finite).sum()), len(finite), confidence)
    k = int(np.asarray(mismatch, dtype=bool).sum())
    rate, m_lo, m_hi = wilson_interval(k, n, confidence)
    top2 = np.asarray(top2_diff, dtype=np.float64)
    return _row(n, (mean, lo, hi), float(np.median(finite)) if len(finite) else math.nan, (rate, m_lo, m_hi),
                float(top2.mean()) if len(top2) else math.nan, n_bad / n if n else math.nan, std, len(finite),
                n if n_faults is None else n_faults)


def _row(n: int, delta: tuple[float, float, float], median: float, rate: tuple[float, float, float],
         top2: float, nonfinite_rate: float, std: float, n_finite: int, n_faults: int) -> dict[str, float]:
    return {
        "n": n,
        "delta_loss_mean": delta[0],
        "delta_loss_ci_low": delta[1],
        "delta_loss_ci_high": delta[2],
        "delta_loss_median": median,
        "mismatch_rate": rate[0],
        "mismatch_ci_low": rate[1],
        "mismatch_ci_high": rate[2],
        "top2_diff_mean": top2,
        "nonfinite_rate": nonfinite_rate,
        "delta_loss_std": std,
        "n_finite": n_finite,
        "n_faults": n_faults,
    }


def _weighted_row(delta_loss: np.ndarray, mismatch: np.ndarray, top2_diff: np.ndarray, nonfinite: np.ndarray | None,
                  confidence: float, stratum: np.ndarray, weight: np.ndarray, n_faults: int | None,
                  fault: np.ndarray | None) -> dict[str, float]:
    """The design-weighted summary: each record stands for ``W_h / n_h`` of the population."""
    codes, uniques = pd.factorize(np.asarray(stratum))
    weights = np.zeros(len(uniques))
    weights[codes] = np.asarray(weight, dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("record weights must be finite, >= 0 and not all zero (each stratum's population share)")
    stats = StratumStats.from_arrays(codes, len(uniques), delta_loss, mismatch, nonfinite, fault)
    mean = stratified_mean(weights, stats, confidence)
    rate = stratified_rate(weights, stats, confidence)
    share = weights[codes] / np.bincount(codes, minlength=len(uniques))[codes]  # each record's population share
    delta = np.asarray(delta_loss, dtype=np.float64)
    finite = np.isfinite(delta) & ~(np.zeros(len(delta), bool) if nonfinite is None else np.asarray(nonfinite, bool))
    n, n_finite = len(delta), int(finite.sum())
    return _row(n, (mean.estimate, mean.low, mean.high), _weighted_median(delta[finite], share[finite]),
                (rate.estimate, rate.low, rate.high),
                float(np.average(np.asarray(top2_diff, dtype=np.float64), weights=share)) if n else math.nan,
                float(share[~finite].sum() / share.sum()) if n else math.nan,
                mean.se * math.sqrt(n_finite),  # so std / sqrt(n_finite) is the design's standard error
                n_finite, n if n_faults is None else n_faults)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The median of the weighted distribution (equal weights: numpy's median)."""
    if len(values) == 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    mid = np.cumsum(w) - 0.5 * w
    return float(np.interp(0.5 * w.sum(), mid, v))

"""The math shared by the metric classes and ``summarize``: one definition, two faces."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

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


def split_finite(delta_loss: np.ndarray, nonfinite: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Finite ΔLoss values of the finite outputs, and how many were left out as non-finite."""
    delta_loss = np.asarray(delta_loss, dtype=np.float64)
    bad = ~np.isfinite(delta_loss)
    if nonfinite is not None:
        bad |= np.asarray(nonfinite, dtype=bool)
    return delta_loss[~bad], int(bad.sum())


def summary_row(delta_loss: np.ndarray, mismatch: np.ndarray, top2_diff: np.ndarray,
                nonfinite: np.ndarray | None, confidence: float = DEFAULT_CONFIDENCE) -> dict[str, float]:
    """One group's summary, with the column names of ``summarize``."""
    finite, n_bad = split_finite(delta_loss, nonfinite)
    n = len(np.asarray(delta_loss))
    mean, std, lo, hi = normal_interval(float(finite.sum()), float((finite * finite).sum()), len(finite), confidence)
    k = int(np.asarray(mismatch, dtype=bool).sum())
    rate, m_lo, m_hi = wilson_interval(k, n, confidence)
    top2 = np.asarray(top2_diff, dtype=np.float64)
    return {
        "n": n,
        "delta_loss_mean": mean,
        "delta_loss_ci_low": lo,
        "delta_loss_ci_high": hi,
        "delta_loss_median": float(np.median(finite)) if len(finite) else math.nan,
        "mismatch_rate": rate,
        "mismatch_ci_low": m_lo,
        "mismatch_ci_high": m_hi,
        "top2_diff_mean": float(top2.mean()) if len(top2) else math.nan,
        "nonfinite_rate": n_bad / n if n else math.nan,
        "delta_loss_std": std,
        "n_finite": len(finite),
    }

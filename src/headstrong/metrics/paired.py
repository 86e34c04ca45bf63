"""Across seeds: the spread of a figure and paired comparisons of two arms.

A single seed's improvement has an interval over the faults (``metrics.improvement``), but a
claim that one head or hardening beats another must also survive the training seed: a model
trained again can move ΔLoss more than a change of head does. The arms of a study share their
seeds (the same data order and, in layers they share, the same fault sites), so they are
compared pairwise within a seed:

- ``across_seeds``: mean, standard deviation, median and a t interval of the mean of per-seed
  values.
- ``paired_t``: a paired t test across seeds (scipy's ``ttest_rel``) of two arms' per-seed
  values, as a difference or, with ``log=True``, as a ratio of geometric means.
- ``bootstrap_paired``: a two-level bootstrap, seeds drawn with replacement (the same seeds for
  both arms) and, within each drawn seed, each arm's faults drawn again (``mean_draws``: within
  strata, a fault that met several images counted once, as ``summarize`` counts it). It gives the
  ratio of two arms' mean ΔLoss (geometric mean over seeds) with a percentile interval that
  holds both sources of variation.

A ``Paired`` result says in words whether its interval excludes "no difference" (1 for a
ratio, 0 for a difference); only then does it say which arm is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from headstrong.metrics._functional import DEFAULT_CONFIDENCE

__all__ = ["SeedSpread", "Paired", "across_seeds", "paired_t", "mean_draws", "layer_mean", "bootstrap_paired"]

DEFAULT_ROUNDS = 2000


def _check_confidence(confidence: float) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in the open interval (0, 1); got {confidence!r}")


def _t_quantile(confidence: float, df: int) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class SeedSpread:
    """Per-seed values of one figure: their mean, spread, median and a t interval of the mean."""

    mean: float
    std: float  # sample standard deviation (ddof=1); nan for one seed
    median: float
    low: float  # t interval of the mean over seeds (nan for one seed)
    high: float
    n: int
    confidence: float = DEFAULT_CONFIDENCE


def across_seeds(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> SeedSpread:
    """Mean ± t·std/√n over seeds (Student's t, n-1 degrees of freedom), std and median."""
    _check_confidence(confidence)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"across_seeds needs a non-empty list of per-seed values; got shape {v.shape}")
    mean, median = float(v.mean()), float(np.median(v))
    if v.size == 1 or not np.all(np.isfinite(v)):
        return SeedSpread(mean, math.nan, median, math.nan, math.nan, int(v.size), confidence)
    std = float(v.std(ddof=1))
    half = _t_quantile(confidence, v.size - 1) * std / math.sqrt(v.size)
    return SeedSpread(mean, std, median, mean - half, mean + half, int(v.size), confidence)


@dataclass(frozen=True)
class Paired:
    """Arm B against arm A, paired by seed.

    ``kind="ratio"``: ``estimate`` is A's figure over B's (for ΔLoss: B's improvement over A, > 1
    when B is more resilient), the geometric mean over seeds. ``kind="difference"``: B - A.
    """

    estimate: float
    low: float
    high: float
    n_seeds: int
    kind: str  # "ratio" | "difference"
    method: str  # how the interval was made, in words
    confidence: float = DEFAULT_CONFIDENCE
    p_value: float = math.nan  # the paired t test's (nan for the bootstrap)

    @property
    def null(self) -> float:
        return 1.0 if self.kind == "ratio" else 0.0

    @property
    def decided(self) -> bool:
        """Whether the interval excludes no difference (and is defined)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return False
        return self.low > self.null or self.high < self.null

    def words(self, a: str, b: str, lower_is_better: bool = True) -> str:
        """The reading: which arm is better, or that the interval includes no difference.

        For a ratio of ΔLoss (A over B), a value above 1 means B has the lower ΔLoss; with
        ``lower_is_better`` that makes B better. For a difference B - A likewise below 0."""
        level = f"{100 * self.confidence:g}%"
        if math.isnan(self.low) or math.isnan(self.high):
            return f"no interval ({self.n_seeds} seed{'s' if self.n_seeds != 1 else ''}, or a figure not finite)"
        if not self.decided:
            return f"no clear difference: the {level} interval includes {self.null:g}"
        b_lower = self.low > self.null if self.kind == "ratio" else self.high < self.null
        better = b if b_lower == lower_is_better else a
        worse = a if better == b else b
        return f"{better} beats {worse} (the {level} interval excludes {self.null:g})"


def paired_t(a: Sequence[float], b: Sequence[float], *, log: bool = False,
             confidence: float = DEFAULT_CONFIDENCE) -> Paired:
    """Paired t test across seeds of arm B against arm A (the same seeds, in the same order).

    ``log=False``: the difference B - A. ``log=True``: the ratio A / B of geometric means (the
    test runs on log A - log B), for positive figures such as mean ΔLoss. Needs at least two
    seeds for an interval; a figure that is 0 or not finite leaves the ratio without one."""
    _check_confidence(confidence)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"paired_t needs two equally long, non-empty lists of per-seed values; got {x.shape} and {y.shape}")
    n = int(x.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(x) - np.log(y) if log else y - x
    kind, method = ("ratio", "paired t across seeds, on log") if log else ("difference", "paired t across seeds")
    if not np.all(np.isfinite(d)):
        return Paired(math.nan, math.nan, math.nan, n, kind, method, confidence)
    mean = float(d.mean())
    if n < 2:
        with np.errstate(over="ignore"):
            return Paired(float(np.exp(mean)) if log else mean, math.nan, math.nan, n, kind, method, confidence)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:  # every seed gave the same difference: no spread to build an interval from
        low = high = mean if mean == 0 else math.nan
        p = math.nan
    else:
        from scipy.stats import t as student_t

        half = _t_quantile(confidence, n - 1) * se
        low, high = mean - half, mean + half
        p = float(2 * student_t.sf(abs(mean) / se, n - 1))
    if log:  # a raw (detector-off) mean can differ by dozens of orders of magnitude: exp may reach inf
        with np.errstate(over="ignore"):
            e_mean, e_low, e_high = (float(v) for v in np.exp([mean, low, high]))
        return Paired(e_mean, e_low, e_high, n, kind, method, confidence, p)
    return Paired(mean, low, high, n, kind, method, confidence, p)


@dataclass(frozen=True)
class _Units:
    """One layer's sampled units (faults): stratum code, finite-mean value, whether finite."""

    code: np.ndarray
    value: np.ndarray
    finite: np.ndarray
    share: np.ndarray  # per stratum code: its population weight (sums to 1 over present strata)


def _units(records: Any) -> _Units:
    """A fault that met several images is one unit (its mean finite ΔLoss), as ``summarize``
    counts it in a stratified sample; records without stratum/weight form one stratum."""
    import pandas as pd

    if not isinstance(records, pd.DataFrame):
        records = pd.DataFrame(records)
    if "delta_loss" not in records.columns:
        raise ValueError(f"records need a 'delta_loss' column; got {', '.join(map(str, records.columns))}")
    if len(records) == 0:
        raise ValueError("no records to draw from: the layer has no evaluated faults")
    delta = records["delta_loss"].to_numpy(np.float64)
    finite = np.isfinite(delta)
    if "nonfinite" in records.columns:
        finite &= ~records["nonfinite"].to_numpy(bool)
    value = np.where(finite, delta, 0.0)
    if "stratum" in records.columns and "weight" in records.columns:
        code, uniques = pd.factorize(records["stratum"].to_numpy())
        weight = np.zeros(len(uniques))
        weight[code] = records["weight"].to_numpy(np.float64)
    else:
        code, weight = np.zeros(len(records), np.int64), np.ones(1)
    if "fault_id" in records.columns:
        ids, first, inverse = np.unique(records["fault_id"].to_numpy(), return_index=True, return_inverse=True)
        if len(ids) < len(records):
            hits = np.bincount(inverse, weights=finite.astype(np.float64))
            value = np.bincount(inverse, weights=value) / np.maximum(hits, 1)
            code, finite = code[first], hits > 0
    if not np.all(np.isfinite(weight)) or np.any(weight < 0) or weight.sum() <= 0:
        raise ValueError("record weights must be finite, >= 0 and not all zero (each stratum's population share)")
    return _Units(np.asarray(code, np.int64), value, finite, weight / weight.sum())


def _estimate(units: _Units, totals: np.ndarray, finite: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The design-weighted ratio estimate from per-stratum sums (last axis: strata)."""
    a = np.where(counts > 0, units.share / np.maximum(counts, 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (totals * a).sum(-1) / (finite * a).sum(-1)


def layer_mean(records: Any) -> float:
    """One layer's design-weighted mean finite ΔLoss (``summarize``'s ``delta_loss_mean``)."""
    u = _units(records)
    k = len(u.share)
    counts = np.bincount(u.code, minlength=k).astype(np.float64)
    totals = np.bincount(u.code, weights=u.value, minlength=k)
    finite = np.bincount(u.code, weights=u.finite.astype(np.float64), minlength=k)
    return float(_estimate(u, totals, finite, counts))


def mean_draws(records: Any, rounds: int = DEFAULT_ROUNDS, rng: np.random.Generator | None = None) -> np.ndarray:
    """``rounds`` bootstrap draws of one layer's design-weighted mean ΔLoss: each stratum's
    faults drawn again with replacement, as many as it had (a fault with several images as one)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer; got {rounds!r}")
    rng = rng if rng is not None else np.random.default_rng(0)
    u = _units(records)
    k = len(u.share)
    counts = np.bincount(u.code, minlength=k).astype(np.float64)
    totals, finite = np.zeros((rounds, k)), np.zeros((rounds, k))
    finite_values = u.finite.astype(np.float64)
    for h in range(k):
        members = np.flatnonzero(u.code == h)
        if len(members) == 0:
            continue
        for start in range(0, rounds, 256):  # bounded memory: 256 rounds x n_h indices at a time
            stop = min(rounds, start + 256)
            pick = members[rng.integers(0, len(members), size=(stop - start, len(members)))]
            totals[start:stop, h] = u.value[pick].sum(1)
            finite[start:stop, h] = finite_values[pick].sum(1)
    return _estimate(u, totals, finite, counts)


def bootstrap_paired(a_draws: Sequence[np.ndarray], b_draws: Sequence[np.ndarray], a_points: Sequence[float],
                     b_points: Sequence[float], *, confidence: float = DEFAULT_CONFIDENCE,
                     rounds: int = DEFAULT_ROUNDS, seed: int = 0) -> Paired:
    """Ratio A / B of two arms' mean ΔLoss, paired by seed, with a two-level bootstrap interval.

    ``a_draws[s]`` / ``b_draws[s]``: each arm's bootstrap draws of its figure in seed s (e.g.
    ``mean_draws``, or a mean of several layers' draws); ``a_points`` / ``b_points``: the figures
    themselves. Each round draws the seeds with replacement (both arms the same seeds) and, for
    each drawn seed, one of each arm's draws at random; the statistic is the mean over drawn seeds
    of log A - log B. The estimate is the geometric mean of the per-seed ratios.
    """
    _check_confidence(confidence)
    n = len(a_draws)
    if n == 0 or not (len(b_draws) == len(a_points) == len(b_points) == n):
        raise ValueError(f"bootstrap_paired needs the same non-empty number of seeds for both arms; got "
                         f"{len(a_draws)}, {len(b_draws)} draws and {len(a_points)}, {len(b_points)} figures")
    with np.errstate(divide="ignore", invalid="ignore"):
        point = np.log(np.asarray(a_points, np.float64)) - np.log(np.asarray(b_points, np.float64))
        logs = [np.log(np.asarray(x, np.float64)) for x in a_draws], [np.log(np.asarray(x, np.float64)) for x in b_draws]
    method = "bootstrap over seeds and faults" if n > 1 else "bootstrap over faults (one seed)"
    if not np.all(np.isfinite(point)):
        return Paired(math.nan, math.nan, math.nan, n, "ratio", method, confidence)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n, size=(rounds, n)) if n > 1 else np.zeros((rounds, 1), np.int64)
    stat = np.zeros(rounds)
    for s in range(n):
        la, lb = logs[0][s], logs[1][s]
        ia, ib = rng.integers(0, len(la), size=(rounds, n)), rng.integers(0, len(lb), size=(rounds, n))
        with np.errstate(invalid="ignore"):
            stat += np.where(seeds == s, la[ia] - lb[ib], 0.0).sum(1)
    stat /= n
    stat = stat[~np.isnan(stat)]
    low, high = (np.quantile(stat, [(1 - confidence) / 2, (1 + confidence) / 2], method="inverted_cdf")
                 if len(stat) else (math.nan, math.nan))
    with np.errstate(over="ignore"):
        return Paired(float(np.exp(point.mean())), float(np.exp(low)), float(np.exp(high)), n, "ratio", method,
                      confidence)


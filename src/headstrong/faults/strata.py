"""Adaptive stratified sampling: strata, pilot, Neyman allocation, stopping rule, weighted estimates.

A layer's uniform population is every (element, bit) pair. Stratified sampling splits it into
strata by bit: each stratum holds the layer's elements at one bit, so its weight (its share of the
uniform population) is 1 / number of bits. A pilot gives every stratum the same few faults; then
faults go to strata in proportion to weight x standard deviation (Neyman), in rounds, until the
layer's interval reaches the requested margin or a budget is spent. Because every estimate is the
design-weighted one, ``sum_h W_h * mean_h``, it estimates the same quantity a uniform campaign
estimates, whatever the allocation.

This is the one piece of code for it: the campaign plans its rounds with ``allocate`` and
``draw_round``, ``metrics.summarize`` computes its intervals with ``stratified_mean`` and
``stratified_rate``, RA's ``is-b`` shapes its proposal with ``allocation_shares`` and sizes its
pilot with ``DEFAULT_PILOT``. Everything here is a pure function of its inputs, so a round's
allocation depends only on the spec, the seed and the records already stored (resume, Ray and
determinism work as for uniform campaigns).

Intervals that hold for stratified samples:

* mean ΔLoss (finite outcomes only, as for uniform campaigns): the ratio estimator
  ``sum_h W_h total_h / n_h  /  sum_h W_h finite_h / n_h`` with its linearised variance
  ``sum_h W_h^2 s_h^2 / n_h`` and a Student t quantile at the Welch-Satterthwaite degrees of
  freedom (strata with few faults and a large spread make the interval wider, as they should);
* mismatch rate: a Wilson interval at the effective sample size ``p(1-p) / var`` (Korn and
  Graubard's rule for survey proportions), with each stratum's variance taken at
  ``(k + 1/2) / (n + 1)`` so a stratum whose faults all missed still counts as uncertain. With a
  single stratum both reduce to the usual intervals (Wilson exactly, the mean with t for z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

TARGETS = ("mismatch", "delta_loss")
DEFAULT_PILOT = 16  # faults per stratum in the pilot (RA's is-b: per bit)
DEFAULT_FLOOR = 0.1  # share of the weighted mean scale every stratum keeps (is-b's eps, too)
DEFAULT_MAX_FAULTS = 102_400  # per layer: GoldenEye's fixed count, never more than GoldenEye spends


@dataclass(frozen=True)
class Strata:
    """One layer's strata: one per bit, each holding all ``elements`` of the layer at that bit."""

    layer: str
    elements: int
    bits: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.elements < 1:
            raise ValueError(f"layer {self.layer!r} has no fault sites to stratify")
        if not self.bits:
            raise ValueError(f"layer {self.layer!r}: stratified sampling needs at least one bit")

    def __len__(self) -> int:
        return len(self.bits)

    @property
    def weights(self) -> np.ndarray:
        """Each stratum's share of the layer's uniform population (element x bit pairs)."""
        return np.full(len(self.bits), 1.0 / len(self.bits))

    def labels(self) -> list[str]:
        """Names of the strata as records carry them: ``layer/bit``."""
        return [f"{self.layer}/{b}" for b in self.bits]

    def codes(self, bit: Any) -> np.ndarray:
        """Each fault's stratum (0..len-1, the position of its bit in ``bits``)."""
        bit = np.asarray(bit, dtype=np.int64)
        lookup = np.full(max(max(self.bits), int(bit.max(initial=0))) + 1, -1, dtype=np.int64)
        lookup[list(self.bits)] = np.arange(len(self.bits))
        code = lookup[bit]
        if np.any(code < 0):
            raise ValueError(f"faults of layer {self.layer!r} hold bits outside its strata {list(self.bits)}")
        return code

    def stats(self, bit: Any, delta_loss: Any, mismatch: Any, nonfinite: Any | None = None,
              fault: Any | None = None) -> "StratumStats":
        """Per-stratum sums of this layer's records, given each record's bit (and fault id)."""
        return StratumStats.from_arrays(self.codes(bit), len(self.bits), delta_loss, mismatch, nonfinite, fault)


@dataclass(frozen=True)
class StratumStats:
    """Per-stratum sums of one group's records: everything a stratified estimate needs."""

    n: np.ndarray  # records
    n_finite: np.ndarray  # records with a finite ΔLoss
    total: np.ndarray  # sum of the finite ΔLoss values
    total_sq: np.ndarray  # sum of their squares
    total_cu: np.ndarray  # sum of their cubes (the skewness correction of the mean's interval)
    mismatches: np.ndarray  # records whose prediction changed

    @classmethod
    def from_arrays(cls, stratum: Any, n_strata: int, delta_loss: Any, mismatch: Any,
                    nonfinite: Any | None = None, fault: Any | None = None) -> "StratumStats":
        """Sums per stratum code (0..n_strata-1) of each record.

        With ``fault`` ids, a fault that met several images counts once, with its mean ΔLoss over
        its finite outcomes and its share of mismatches: the fault is what was sampled, so its
        images are not independent draws.
        """
        code = np.asarray(stratum, dtype=np.int64)
        delta = np.asarray(delta_loss, dtype=np.float64)
        finite = np.isfinite(delta)
        if nonfinite is not None:
            finite &= ~np.asarray(nonfinite, dtype=bool)
        value = np.where(finite, delta, 0.0)
        mismatch = np.asarray(mismatch, dtype=np.float64)
        if fault is not None:
            ids, first, inverse = np.unique(np.asarray(fault), return_index=True, return_inverse=True)
            if len(ids) < len(code):
                hits = np.bincount(inverse, weights=finite.astype(np.float64))
                value = np.bincount(inverse, weights=value) / np.maximum(hits, 1)
                mismatch = np.bincount(inverse, weights=mismatch) / np.bincount(inverse)
                code, finite = code[first], hits > 0

        def per(weights: np.ndarray | None = None) -> np.ndarray:
            return np.bincount(code, weights=weights, minlength=n_strata).astype(np.float64)

        return cls(per(), per(finite.astype(np.float64)), per(value), per(value * value), per(value**3), per(mismatch))

    @classmethod
    def empty(cls, n_strata: int) -> "StratumStats":
        zero = np.zeros(n_strata)
        return cls(zero, zero, zero, zero, zero, zero)


@dataclass(frozen=True)
class Interval:
    """A design-weighted estimate with its two-sided interval and standard error."""

    estimate: float
    low: float
    high: float
    se: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def _normalised(weights: Any) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("stratum weights must be a non-empty list of non-negative numbers with a positive sum")
    return w / w.sum()


def _z(confidence: float) -> float:
    from statistics import NormalDist

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _nan_interval() -> Interval:
    return Interval(math.nan, math.nan, math.nan, math.nan)


def stratified_mean(weights: Any, stats: StratumStats, confidence: float) -> Interval:
    """Design-weighted mean ΔLoss over finite outcomes, with a skew-corrected t interval.

    The quantile is Student's t at the Satterthwaite degrees of freedom; the interval is moved
    by Hall's (1992) correction for the studentised mean, ``se * gamma (2 q^2 + 1) / 6`` with
    gamma the estimate's skewness (at most q / 2): ΔLoss is right-skewed, and a sample that
    missed the rare large values has a low mean and a low spread at once, so a symmetric
    interval falls short on the high side. The half-width, which the stopping rule reads, is
    unchanged.
    """
    w = _normalised(weights)
    n, fin = stats.n, stats.n_finite
    if np.any(n[w > 0] < 1) or fin.sum() < 1:
        return _nan_interval()
    a = np.where(n > 0, w / np.maximum(n, 1), 0.0)  # each record's share of the population
    covered = float((a * fin).sum())
    ratio = float((a * stats.total).sum()) / covered
    if np.any(n[w > 0] < 2):
        return Interval(ratio, math.nan, math.nan, math.nan)
    # residuals e = finite * (y - ratio): their per-stratum sample variance, from the sums
    e_sq = stats.total_sq - 2 * ratio * stats.total + ratio * ratio * fin
    e_sum = stats.total - ratio * fin
    s2 = np.maximum(e_sq - e_sum * e_sum / np.maximum(n, 1), 0.0) / np.maximum(n - 1, 1)
    parts = np.where(w > 0, w * w * s2 / np.maximum(n, 1), 0.0) / covered**2
    var = float(parts.sum())
    se = math.sqrt(var)
    if var <= 0:
        return Interval(ratio, ratio, ratio, 0.0)
    df = var * var / float((parts * parts / np.maximum(n - 1, 1)).sum())
    from scipy.stats import t as student_t

    q = float(student_t.ppf(0.5 + confidence / 2, df))
    shift = se * _skew_shift(w, stats, ratio, covered, var, q)
    return Interval(ratio, ratio - q * se + shift, ratio + q * se + shift, se)


def _skew_shift(w: np.ndarray, stats: StratumStats, ratio: float, covered: float, var: float, q: float) -> float:
    """Hall's shift of the interval, in standard errors, from the residuals' third moments."""
    n, fin = np.maximum(stats.n, 1), stats.n_finite
    with np.errstate(all="ignore"):
        s1 = stats.total - ratio * fin  # sums of e, e^2, e^3 with e = y - ratio on finite records
        s2 = stats.total_sq - 2 * ratio * stats.total + ratio**2 * fin
        s3 = stats.total_cu - 3 * ratio * stats.total_sq + 3 * ratio**2 * stats.total - ratio**3 * fin
        mean = s1 / n
        m3 = (s3 - 3 * mean * s2 + 3 * mean**2 * s1 - n * mean**3) / n
        kappa3 = float((np.where(w > 0, w**3 * m3 / n**2, 0.0)).sum()) / covered**3
        gamma = kappa3 / var**1.5
    if not np.isfinite(gamma):
        return 0.0
    return float(np.clip(gamma * (2 * q * q + 1) / 6, -q / 2, q / 2))


def stratified_rate(weights: Any, stats: StratumStats, confidence: float) -> Interval:
    """Design-weighted mismatch rate with a Wilson interval at the effective sample size."""
    w = _normalised(weights)
    n, k = stats.n, stats.mismatches
    if np.any(n[w > 0] < 1):
        return _nan_interval()
    m = np.maximum(n, 1)
    rate = float((w * k / m).sum())
    shrunk = (k + 0.5) / (n + 1)
    var = float((w * w * shrunk * (1 - shrunk) / m).sum())
    centre = float((w * shrunk).sum())
    n_eff = centre * (1 - centre) / var
    z = _z(confidence)
    denom = 1 + z * z / n_eff
    mid = (rate + z * z / (2 * n_eff)) / denom
    half = z * math.sqrt(max(rate * (1 - rate), 0.0) / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    return Interval(rate, max(0.0, mid - half), min(1.0, mid + half), math.sqrt(var))


def stratum_sd(target: str, stats: StratumStats) -> np.ndarray:
    """Each stratum's standard deviation for ``target``, as Neyman allocation uses it.

    Mismatch: ``sqrt(p(1-p))`` at ``p = (k + 1/2) / (n + 1)``; ΔLoss: the sample deviation of the
    finite values (0 while a stratum has fewer than two).
    """
    _check_target(target)
    n = stats.n
    if target == "mismatch":
        p = (stats.mismatches + 0.5) / (n + 1)
        return np.sqrt(p * (1 - p))
    fin = stats.n_finite
    mean = stats.total / np.maximum(fin, 1)
    var = np.maximum(stats.total_sq - fin * mean * mean, 0.0) / np.maximum(fin - 1, 1)
    return np.where(fin >= 2, np.sqrt(var), 0.0)


def allocation_shares(weights: Any, scale: Any, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Neyman shares ``W_h (scale_h + floor * sum_k W_k scale_k)``, normalised.

    ``scale``: each stratum's standard deviation (campaigns) or mean harm (RA's is-b). The floor
    keeps every stratum with weight above zero in the sample, so a stratum whose pilot saw no harm
    is not starved; with no measured scale at all the shares are the weights (uniform sampling).
    """
    w = _normalised(weights)
    s = np.asarray(scale, dtype=np.float64)
    if s.shape != w.shape or np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"scale must hold one finite value >= 0 per stratum ({len(w)}), got {s.tolist()}")
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    mean = float((w * s).sum())
    if mean <= 0:
        return w
    shaped = w * (s + floor * mean)
    return shaped / shaped.sum()


def pilot_counts(n_strata: int, per_stratum: int = DEFAULT_PILOT) -> np.ndarray:
    """The pilot: the same number of faults in every stratum."""
    return np.full(n_strata, int(per_stratum), dtype=np.int64)


@dataclass(frozen=True)
class StoppingRule:
    """When a layer's estimate is precise enough, and how the faults spent get there.

    ``target``: "mismatch" (``margin`` is absolute on the rate) or "delta_loss" (``margin`` is
    relative to the mean ΔLoss); ``confidence`` of the interval; ``max_faults`` per layer, pilot
    included; ``pilot`` faults per stratum; ``floor`` as in ``allocation_shares``.
    """

    target: str = "mismatch"
    margin: float = 0.005
    confidence: float = 0.99
    max_faults: int = DEFAULT_MAX_FAULTS
    pilot: int = DEFAULT_PILOT
    floor: float = DEFAULT_FLOOR

    def __post_init__(self) -> None:
        _check_target(self.target)
        for name in ("margin", "confidence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be a number in the open interval (0, 1); got {value!r}")
        for name, low in (("max_faults", 1), ("pilot", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        if isinstance(self.floor, bool) or not isinstance(self.floor, (int, float)) or not self.floor > 0:
            raise ValueError(f"floor must be a number > 0 (a stratum must never get no faults); got {self.floor!r}")

    def check_budget(self, strata: Strata) -> None:
        """``max_faults`` must at least pay for the pilot of every stratum."""
        need = self.pilot * len(strata)
        if self.max_faults < need:
            raise ValueError(
                f"max_faults={self.max_faults} is below the pilot of layer {strata.layer!r} "
                f"({self.pilot} faults x {len(strata)} bit strata = {need}); allow at least {need}"
            )

    def interval(self, weights: Any, stats: StratumStats) -> Interval:
        """The layer's interval for the target."""
        if self.target == "mismatch":
            return stratified_rate(weights, stats, self.confidence)
        return stratified_mean(weights, stats, self.confidence)

    def goal(self, estimate: Interval) -> float:
        """The half-width to reach: ``margin``, or ``margin`` x |mean| for ΔLoss."""
        return self.margin if self.target == "mismatch" else self.margin * abs(estimate.estimate)


@dataclass(frozen=True)
class Allocation:
    """One layer's next round: faults to add per stratum, or why none are added."""

    counts: np.ndarray  # faults per stratum in the next round
    status: str  # "pilot", "running", "reached" (margin met) or "budget" (max_faults spent)
    spent: int  # faults already stored
    half_width: float  # the current half-width (nan before the pilot)
    goal: float  # the half-width to reach

    @property
    def done(self) -> bool:
        return self.status in ("reached", "budget")


def allocate(rule: StoppingRule, strata: Strata, stats: StratumStats) -> Allocation:
    """The next round of one layer, from the records stored so far (a pure function).

    Round 0 is the pilot. Afterwards, if the interval is not yet narrow enough and budget is left,
    the faults the layer needs are estimated from Neyman allocation over the current standard
    deviations, and each stratum gets what it lacks of its share; a round at most doubles the
    faults spent, so a pilot that misjudged the spread costs at most one round's overshoot.
    """
    rule.check_budget(strata)
    n = np.asarray(stats.n, dtype=np.int64)
    spent = int(n.sum())
    if spent == 0:
        return Allocation(pilot_counts(len(strata), rule.pilot), "pilot", 0, math.nan, math.nan)
    w = strata.weights
    estimate = rule.interval(w, stats)
    goal = rule.goal(estimate)
    half = estimate.half_width
    if half <= goal:
        return Allocation(np.zeros(len(strata), np.int64), "reached", spent, half, goal)
    room = rule.max_faults - spent
    if room <= 0:
        return Allocation(np.zeros(len(strata), np.int64), "budget", spent, half, goal)
    sd = stratum_sd(rule.target, stats)
    shares = allocation_shares(w, sd, rule.floor)
    per_fault = float((w * w * sd * sd / shares).sum())  # the estimate's variance x faults, at these shares
    if rule.target == "mismatch":  # the Wilson interval's own size at the effective sample size
        centre = float((w * (stats.mismatches + 0.5) / (n + 1)).sum())
        needed = wilson_sample_size(estimate.estimate, goal, rule.confidence) * per_fault / (centre * (1 - centre))
    else:
        finite = max(float(stats.n_finite.sum() / spent), 1e-12)  # the ratio's variance counts finite ones
        variance = (goal * finite / _z(rule.confidence)) ** 2
        needed = per_fault / variance if variance > 0 else math.inf
    needed = min(needed, rule.max_faults) if math.isfinite(needed) else rule.max_faults
    want = np.maximum(np.ceil(needed * shares) - n, 0.0)
    if want.sum() < len(strata):  # the plan says enough, the interval says not yet: grow by a quarter
        want = shares * max(spent // 4, len(strata))
    step = min(room, max(spent, len(strata)), int(math.ceil(want.sum())))
    return Allocation(_round_to(want, step), "running", spent, half, goal)


def wilson_sample_size(rate: float, margin: float, confidence: float) -> int:
    """The smallest sample whose Wilson interval at ``rate`` has a half-width within ``margin``.

    What a uniform campaign that stops as soon as its own interval is narrow enough spends, and
    the effective sample size a stratified one aims at."""
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    z = _z(confidence)
    rate = min(max(float(rate), 0.0), 1.0) if math.isfinite(rate) else 0.5

    def half(n: int) -> float:
        return z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)

    low, high = 1, 1
    while half(high) > margin:
        high *= 2
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if half(mid) <= margin else (mid + 1, high)
    return low


def _round_to(values: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total`` (largest remainders), from non-negative reals."""
    values = np.asarray(values, dtype=np.float64)
    if values.sum() > 0:
        values = values * (total / values.sum())
    base = np.floor(values).astype(np.int64)
    rest = total - int(base.sum())
    if rest > 0:
        order = np.argsort(-(values - base), kind="stable")
        base[order[:rest]] += 1
    return base


def draw_round(strata: Strata, counts: Any, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One round's faults of a layer as (flat index, bit) int64 tensors, in a seeded random order.

    Within a stratum the element is uniform over the layer's elements. The order is shuffled so
    the evaluation image a fault meets (by its position in the campaign) is independent of its
    stratum.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(strata),) or np.any(counts < 0):
        raise ValueError(f"counts must hold one integer >= 0 per stratum ({len(strata)})")
    bits = torch.repeat_interleave(torch.tensor(strata.bits, dtype=torch.int64), torch.from_numpy(counts))
    index = torch.randint(0, strata.elements, (len(bits),), generator=generator)
    order = torch.randperm(len(bits), generator=generator)
    return index[order], bits[order]


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")

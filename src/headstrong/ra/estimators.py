"""Monte Carlo estimators of Resiliency Accuracy, each unbiased for the hardware-aware RA.

RA = sum_j p(j) [UF(j) A(j) + (1 - UF(j)) SA] + P_control (1 - crash) SA. SA is measured exactly
by the golden run, so every estimator estimates only the accuracy the faults cost,
D = sum_j p(j) UF(j) (SA - A(j)), and RA = P_software SA + P_control (1 - crash) SA - D. A draw
X from the proposal q contributes p(X) UF (SA - A(X)) / q(X): unbiased whenever q > 0 where
p > 0, which every proposal here guarantees. Proposals factor as group (layer, type) x element
(uniform) x bit, so sampling never lists every site of a large model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import numpy as np
import pandas as pd

from headstrong._registry import Registry
from headstrong.faults.strata import DEFAULT_FLOOR, DEFAULT_PILOT, allocation_shares, pilot_counts
from headstrong.ra.sites import SiteSpace

Z95 = 1.959963984540054
ProgressFn = Callable[[int, int, str], None]


class AccuracyOracle(Protocol):
    """Gives A(j), the accuracy over a fixed evaluation set with fault j in each inference.

    ``images`` = m asks for the accuracy over the set's first m images only (is-b's pilot needs
    no more to tell harmful bits from harmless ones); ``sa_on(m)`` is the fault-free accuracy there.
    """

    space: SiteSpace
    sa: float
    n_images: int

    def accuracy(self, ids: np.ndarray, progress: Optional[ProgressFn] = None,
                 images: Optional[int] = None) -> np.ndarray: ...

    def sa_on(self, images: int) -> float: ...


@dataclass(frozen=True)
class Proposal:
    """q(group, element, bit) = q_group[g] / n[g] * q_bit[g, bit]."""

    q_group: np.ndarray  # [G], sums to 1
    q_bit: np.ndarray  # [G, bits], rows sum to 1

    def sample(self, space: SiteSpace, k: int, rng: np.random.Generator) -> np.ndarray:
        group = rng.choice(len(self.q_group), size=k, p=self.q_group)
        element = (rng.random(k) * space.n[group]).astype(np.int64)
        element = np.minimum(element, space.n[group] - 1)
        cum = np.cumsum(self.q_bit, axis=1)
        u = rng.random(k)[:, None] * cum[group, -1:]
        bit = np.minimum((u >= cum[group]).sum(axis=1), space.bits - 1)
        return space.encode(group, element, bit)

    def q(self, space: SiteSpace, group: np.ndarray, bit: np.ndarray) -> np.ndarray:
        return self.q_group[group] / space.n[group] * self.q_bit[group, bit]


@dataclass
class RAEstimate:
    """An RA estimate with its 95% interval, running estimate and the software figure beside it.

    ``ra``, ``ci``, ``software`` and ``software_ci`` are fractions in [0, 1]; the intervals are honest
    at small samples (t quantile, a variance floor from the rate of harmful draws: ``_mean_ci``).
    """

    estimator: str
    ra: float
    ci: tuple[float, float]
    sa: float
    software: float
    software_ci: tuple[float, float]
    samples: int
    std: float  # per-sample standard deviation (the interval uses at least a floor of it: see _mean_ci)
    trace: np.ndarray = field(repr=False)
    n_evaluated: int = 0  # distinct sites whose accuracy this estimate used (pilot included)
    pilot: int = 0  # faults in is-b's pilot campaign
    pilot_cost: float = 0.0  # the pilot's engine work in full-set faults: pilot x pilot images / images
    harm: Optional[np.ndarray] = field(default=None, repr=False)
    records: Optional[pd.DataFrame] = field(default=None, repr=False)

    @property
    def half_width(self) -> float:
        return (self.ci[1] - self.ci[0]) / 2

    def samples_for(self, margin: float = 0.005, z: float = Z95) -> int:
        """Draws this estimator needs for a +-margin interval, from its per-sample spread."""
        return int(np.ceil((z * self.std / margin) ** 2))


def _base(space: SiteSpace, sa: float) -> float:
    """RA if no software fault cost any accuracy: the control crashes alone lower it."""
    return space.p_software * sa + space.p_control * (1.0 - space.accelerator.control_crash) * sa


CLT_MIN_HARMFUL = 10  # harmful draws below which a sample's spread is not trusted (the np >= 10 rule)


def _mean_ci(values: np.ndarray, moves: np.ndarray, reach: np.ndarray) -> tuple[float, tuple[float, float], float]:
    """Mean of per-draw values, a 95% interval honest at small samples, and the per-draw spread.

    Most draws are masked faults: every such draw gives the same value, and the spread comes
    from the few harmful ones (``moves``: how far each draw moved its value; 0 when masked). A
    plain mean +- z s / sqrt(n) is then only as good as their number: 20 draws that all missed the
    harmful sites give s = 0 and a zero-width interval, though harm at 1 site in 10 fits those 20
    draws well. So the interval is t s' / sqrt(n) around the mean, with Student's t quantile
    (n - 1 degrees of freedom), and while the harmful draws count fewer than ``CLT_MIN_HARMFUL``
    (the usual np >= 10 condition for a normal approximation of a rate; counted by Kish's
    effective number, (sum m)^2 / sum m^2 over their moves m, so one large move among many small
    ones counts as about one), s' = max(s, sqrt(r (1 - r) mean(reach^2))):

    - r = (k + z^2/2) / (n + z^2), Wilson's centre for k harmful draws in n: never 0, so a harm
      rate the sample cannot rule out at 95% is allowed for;
    - ``reach`` holds, per draw, the most that draw's site could move its value (weight x UF x the
      most accuracy one fault can change, max(SA, 1 - SA)); if sites drawn as the proposal draws
      them were harmful at rate r, as far as they can be, the per-draw spread would be
      sqrt(r (1 - r) E_q[reach^2]), and the draws' mean of reach^2 estimates E_q[reach^2].

    With ten or more effective harmful draws the sample's own spread is used (the bench's runs
    against the exact RA find it honest there: docs/BENCHMARKS.md, "runs within ±0.5%"). RA and
    the software accuracy lie in [0, 1], so the interval (and the estimate) is clipped there;
    clipping never moves an estimate away from a truth inside [0, 1].
    """
    n = len(values)
    mean = float(np.clip(values.mean(), 0.0, 1.0))
    if n < 2:
        return mean, (0.0, 1.0), float("inf")
    from scipy.stats import t as student_t

    std = float(values.std(ddof=1))
    spread = std
    moved = np.abs(moves[moves != 0])
    k = len(moved)
    k_eff = float(moved.sum() ** 2 / (moved**2).sum()) if k else 0.0  # Kish: harmful draws by weight
    if k_eff < CLT_MIN_HARMFUL:
        rate = (k + Z95 * Z95 / 2) / (n + Z95 * Z95)
        spread = max(std, float(np.sqrt(rate * (1 - rate) * np.mean(reach**2))))
    half = float(student_t.ppf(0.975, n - 1)) * spread / np.sqrt(n)
    return mean, (max(0.0, mean - half), min(1.0, mean + half)), std


_REGISTRY: Registry[type["Estimator"]] = Registry("estimator")


def register(name: str) -> Callable[[type["Estimator"]], type["Estimator"]]:
    """File an ``Estimator`` subclass under ``name`` (its ``name`` attribute too)."""

    def wrap(cls: type["Estimator"]) -> type["Estimator"]:
        cls.name = name
        return _REGISTRY.add(name, cls)

    return wrap


def list_estimators() -> list[str]:
    return _REGISTRY.names()


def get(name: str, **params) -> "Estimator":
    """The estimator called ``name``, built with ``params``; unknown names list the choices."""
    return _REGISTRY.get(name)(**params)


class Estimator:
    """Draw sites from ``proposal``, weight each by p/q; subclasses only choose the proposal."""

    name = "base"

    def proposal(self, space: SiteSpace, oracle: AccuracyOracle, rng: np.random.Generator,
                 progress: Optional[ProgressFn]) -> Proposal:
        raise NotImplementedError

    def pilot_size(self) -> int:
        return 0

    def pilot_cost(self, oracle: AccuracyOracle) -> float:
        return 0.0

    def estimate(self, oracle: AccuracyOracle, samples: int, seed: int = 0,
                 progress: Optional[ProgressFn] = None) -> RAEstimate:
        if not is_positive_int(samples):
            raise ValueError(f"samples = {samples!r}: must be an integer >= 1")
        space, sa = oracle.space, oracle.sa
        rng = np.random.default_rng(seed)
        proposal = self.proposal(space, oracle, rng, progress)
        ids = proposal.sample(space, int(samples), rng)
        unique, inverse = np.unique(ids, return_inverse=True)
        acc = oracle.accuracy(unique, progress=_phase(progress, self.name))[inverse]
        group, element, bit = space.decode(ids)
        q = proposal.q(space, group, bit)
        weight = space.p_site(group) / q
        loss = space.uf[group] * (sa - acc)
        values = _base(space, sa) - weight * loss
        reach = max(sa, 1.0 - sa)  # the most accuracy one fault can take away or give
        ra, ci, std = _mean_ci(values, weight * loss, weight * space.uf[group] * reach)
        sw_weight = np.where(space.software_mask(group), 1.0 / (space.n_software_sites * q), 0.0)
        sw_moves = sw_weight * (sa - acc)
        software, software_ci, _ = _mean_ci(sa - sw_moves, sw_moves, sw_weight * reach)
        trace = np.clip(np.cumsum(values) / np.arange(1, len(values) + 1), 0.0, 1.0)
        records = pd.DataFrame({
            "site": ids, "layer": space.layer[group], "type": space.type[group], "element": element,
            "bit": bit, "accuracy": acc, "weight": weight, "value": values,
        })
        measured = np.union1d(unique, getattr(self, "pilot_ids_", np.zeros(0, dtype=np.int64)))
        return RAEstimate(
            estimator=self.name, ra=ra, ci=ci, sa=sa, software=software, software_ci=software_ci,
            samples=int(samples), std=std, trace=trace, n_evaluated=len(measured), pilot=self.pilot_size(),
            pilot_cost=self.pilot_cost(oracle), harm=getattr(self, "harm_", None), records=records,
        )


def _phase(progress: Optional[ProgressFn], phase: str) -> Optional[ProgressFn]:
    if progress is None:
        return None
    return lambda done, total, _phase=phase: progress(done, total, phase)


def _uniform_bits(space: SiteSpace) -> np.ndarray:
    return np.full((len(space.n), space.bits), 1.0 / space.bits)


@register("uniform")
class Uniform(Estimator):
    """Every software site equally likely, as PyTorchFI-style tools sample (weighted by p/q)."""

    def proposal(self, space, oracle, rng, progress):
        sizes = space.n.astype(np.float64)
        return Proposal(sizes / sizes.sum(), _uniform_bits(space))


@register("mac")
class MacWeighted(Estimator):
    """Layer chosen by its share of MACs, then every site of the layer equally likely."""

    def proposal(self, space, oracle, rng, progress):
        sizes = space.n.astype(np.float64)
        per_layer = pd.Series(sizes).groupby(space.layer).transform("sum").to_numpy()
        q = space.layer_lp * sizes / per_layer
        return Proposal(q / q.sum(), _uniform_bits(space))


@register("is")
class ImportanceP(Estimator):
    """q proportional to p: the hardware-aware site distribution itself."""

    def proposal(self, space, oracle, rng, progress):
        return Proposal(space.p_group / space.p_group.sum(), _uniform_bits(space))


@register("is-b")
class ImportanceBits(Estimator):
    """q proportional to p(j) (h(bit) + eps), h the accuracy lost per bit, measured by a pilot.

    The pilot draws ``pilot`` sites (default 16 per bit) from p, the same number at every bit
    (the pilot of stratified campaigns, ``headstrong.faults.strata``),
    runs each on the first ``pilot_images`` images of the set (default 25; None: all) and sets
    h(b) to the mean |UF (SA - A)| it measured at bit b. A few images suffice: the pilot only has
    to find the bits whose flips cost accuracy, and its cost is pilot x pilot_images / images
    full-set faults. The bit shares are ``strata.allocation_shares`` (the campaigns' Neyman shares
    with h as the scale): eps = ``floor`` x mean h keeps q > 0 wherever p > 0, so the estimate stays
    unbiased even where the pilot saw no harm; the pilot's own draws are not part of it.
    """

    def __init__(self, pilot: Optional[int] = None, pilot_images: Optional[int] = 25, floor: float = DEFAULT_FLOOR):
        if pilot is not None and not is_positive_int(pilot):
            raise ValueError(f"pilot = {pilot!r}: must be an integer >= 1 (faults in the pilot campaign)")
        if pilot_images is not None and not is_positive_int(pilot_images):
            raise ValueError(f"pilot_images = {pilot_images!r}: must be an integer >= 1, or None for every image")
        if not floor > 0:
            raise ValueError(f"floor = {floor!r}: must be > 0, or the estimate could be biased")
        self.pilot = pilot
        self.pilot_images = pilot_images
        self.floor = float(floor)
        self.harm_: Optional[np.ndarray] = None
        self._pilot_n = 0

    def pilot_size(self) -> int:
        return self._pilot_n

    def pilot_cost(self, oracle: AccuracyOracle) -> float:
        return self._pilot_n * self._images(oracle) / oracle.n_images

    def _images(self, oracle: AccuracyOracle) -> int:
        return oracle.n_images if self.pilot_images is None else min(self.pilot_images, oracle.n_images)

    def proposal(self, space, oracle, rng, progress):
        per_bit = max(1, (self.pilot if self.pilot is not None else DEFAULT_PILOT * space.bits) // space.bits)
        q_group = space.p_group / space.p_group.sum()
        group = rng.choice(len(q_group), size=per_bit * space.bits, p=q_group)
        element = np.minimum((rng.random(len(group)) * space.n[group]).astype(np.int64), space.n[group] - 1)
        bit = np.repeat(np.arange(space.bits), pilot_counts(space.bits, per_bit))
        ids = space.encode(group, element, bit)
        unique, inverse = np.unique(ids, return_inverse=True)
        images = self._images(oracle)
        acc = oracle.accuracy(unique, progress=_phase(progress, "is-b pilot"), images=images)[inverse]
        loss = np.abs(space.uf[group] * (oracle.sa_on(images) - acc))
        harm = np.bincount(bit, weights=loss, minlength=space.bits) / per_bit
        self.harm_ = harm
        self.pilot_ids_ = unique
        self._pilot_n = len(unique)
        shares = allocation_shares(np.ones(space.bits), harm, self.floor)  # the campaigns' Neyman shares
        return Proposal(q_group, np.tile(shares, (len(q_group), 1)))


def is_positive_int(value: object) -> bool:
    """An int (numpy's too, not a bool) of at least 1: the only valid count of samples or faults."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


@register("exact")
class Exact(Estimator):
    """Every site enumerated: RA exactly, for models small enough."""

    def estimate(self, oracle, samples=None, seed=0, progress=None):
        space, sa = oracle.space, oracle.sa
        table = oracle.accuracy(np.arange(space.size, dtype=np.int64), progress=_phase(progress, "exact"))
        return exact_from_table(space, table, sa)


def exact_from_table(space: SiteSpace, table: np.ndarray, sa: float) -> RAEstimate:
    """Exact RA and software figure from the accuracy of every site (site id order)."""
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (space.size,):
        raise ValueError(f"table has shape {table.shape}; expected ({space.size},), one accuracy per site")
    group = np.repeat(np.arange(len(space.n)), space.n * space.bits)
    loss = (space.p_site(group) * space.uf[group] * (sa - table)).sum()
    ra = _base(space, sa) - float(loss)
    sw = space.software_mask(group)
    software = float(table[sw].mean())
    return RAEstimate(
        estimator="exact", ra=ra, ci=(ra, ra), sa=sa, software=software, software_ci=(software, software),
        samples=space.size, std=0.0, trace=np.array([ra]), n_evaluated=space.size,
    )


def proposal_std(space: SiteSpace, proposal: Proposal, table: np.ndarray, sa: float) -> float:
    """Exact per-sample standard deviation of an estimator with this proposal, from a full table."""
    group = np.repeat(np.arange(len(space.n)), space.n * space.bits)
    bit = np.arange(space.size) - space.offset[group]
    bit = bit % space.bits
    f = space.p_site(group) * space.uf[group] * (sa - np.asarray(table, dtype=np.float64))
    q = proposal.q(space, group, bit)
    if np.any((q <= 0) & (f != 0)):
        raise ValueError("the proposal gives q = 0 to a site that matters: the estimator would be biased")
    second = np.sum(np.where(q > 0, f * f / np.where(q > 0, q, 1.0), 0.0))
    return float(np.sqrt(max(second - f.sum() ** 2, 0.0)))


class TableOracle:
    """An oracle reading A(j) from precomputed tables, e.g. an exact enumeration's.

    ``table`` holds A(j) over the whole evaluation set of ``n_images`` images; ``subsets`` maps m
    to (table, SA) over the set's first m images, for is-b's pilot. Without them, a pilot must
    use every image (``pilot_images=None``).
    """

    def __init__(self, space: SiteSpace, table: np.ndarray, sa: float, n_images: int = 1,  # 1: the table alone
                 subsets: Optional[dict[int, tuple[np.ndarray, float]]] = None):
        self.space, self.sa, self.n_images = space, float(sa), int(n_images)
        self.table = self._checked(table)
        self.subsets = {int(m): (self._checked(t), float(s)) for m, (t, s) in (subsets or {}).items()}
        self.calls = 0

    def _checked(self, table: np.ndarray) -> np.ndarray:
        table = np.asarray(table, dtype=np.float64)
        if table.shape != (self.space.size,):
            raise ValueError(f"table has shape {table.shape}; expected ({self.space.size},), one accuracy per site")
        return table

    def _table_for(self, images: Optional[int]) -> tuple[np.ndarray, float]:
        if images is None or images >= self.n_images:
            return self.table, self.sa
        if images not in self.subsets:
            raise ValueError(f"no table for the first {images} of {self.n_images} images; have "
                             f"{sorted(self.subsets) or 'none'} (pass subsets=, or pilot_images=None)")
        return self.subsets[images]

    def sa_on(self, images: int) -> float:
        return self._table_for(images)[1]

    def accuracy(self, ids: np.ndarray, progress: Optional[ProgressFn] = None,
                 images: Optional[int] = None) -> np.ndarray:
        table = self._table_for(images)[0]
        self.calls += len(ids)
        if progress is not None:
            progress(len(ids), len(ids))
        return table[np.asarray(ids, dtype=np.int64)]

"""Estimator math against a known accuracy table: unbiased, honest intervals, is-b cheapest."""

import numpy as np
import pytest
from torch import nn

from headstrong.ra import Accelerator, SiteSpace, TableOracle, exact_from_table, list_estimators, proposal_std
from headstrong.ra import estimators as est

SA = 0.8


def _space(crash: float = 1.0) -> SiteSpace:
    model = nn.Sequential(
        nn.AvgPool2d(2), nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(128, 10),
    )
    return SiteSpace(model, Accelerator.systolic(8, 8, "os", control_crash=crash), (1, 28, 28), bits=8)


def _table(space: SiteSpace, seed: int = 0) -> np.ndarray:
    """Accuracy per site shaped like real campaigns: high bits hurt, most sites are masked."""
    rng = np.random.default_rng(seed)
    group, _, bit = space.decode(np.arange(space.size))
    hurt = rng.random(space.size) < np.array([0.01] * 5 + [0.05, 0.4, 0.9])[bit]
    drop = np.where(hurt, rng.uniform(0.05, SA, space.size) * 2.0 ** (bit - 7), 0.0)
    return SA - drop * np.where(space.type[group] == "output", 0.5, 1.0)


def _literal_ra(space: SiteSpace, table: np.ndarray) -> float:
    """RA straight from DESIGN.md: sum_j p(j) [UF A + (1 - UF) SA] plus the control sites."""
    total = 0.0
    for site in range(space.size):
        g, _, _ = space.decode(np.array([site]))
        p = space.p_group[g[0]] / (space.n[g[0]] * space.bits)
        total += p * (space.uf[g[0]] * table[site] + (1 - space.uf[g[0]]) * SA)
    return total + space.p_control * (1 - space.accelerator.control_crash) * SA


@pytest.mark.parametrize("crash", [1.0, 0.25])
def test_exact_matches_the_literal_sum(crash: float) -> None:
    space = _space(crash)
    table = _table(space)
    exact = exact_from_table(space, table, SA)
    assert exact.ra == pytest.approx(_literal_ra(space, table), abs=1e-12)
    group, _, _ = space.decode(np.arange(space.size))
    assert exact.software == pytest.approx(table[space.software_mask(group)].mean())


def test_exact_estimator_asks_the_oracle_for_every_site_once() -> None:
    space = _space()
    oracle = TableOracle(space, _table(space), SA)
    result = est.get("exact").estimate(oracle, samples=None)
    assert oracle.calls == space.size
    assert result.ra == pytest.approx(exact_from_table(space, oracle.table, SA).ra)


@pytest.mark.parametrize("name", ["uniform", "mac", "is", "is-b"])
def test_estimators_are_unbiased_with_honest_intervals(name: str) -> None:
    space = _space()
    oracle = TableOracle(space, _table(space), SA)
    exact = exact_from_table(space, oracle.table, SA)
    runs = [est.get(name).estimate(oracle, samples=300, seed=s) for s in range(200)]
    ras = np.array([r.ra for r in runs])
    std = np.mean([r.std for r in runs])
    # the mean of 200 independent estimates sits within 4 standard errors of the exact RA
    assert abs(ras.mean() - exact.ra) < 4 * std / np.sqrt(300 * 200)
    covered = np.mean([r.ci[0] <= exact.ra <= r.ci[1] for r in runs])
    assert covered >= 0.85  # skewed weights under-cover a little at 300 draws; is-b's floor over-covers
    softwares = np.array([r.software for r in runs])
    assert abs(softwares.mean() - exact.software) < 4 * softwares.std() / np.sqrt(200) + 1e-9
    last = runs[0]
    assert len(last.trace) == 300 and last.trace[-1] == pytest.approx(last.ra)


@pytest.mark.parametrize("name", ["uniform", "mac", "is", "is-b"])
def test_intervals_are_honest_after_20_draws(name: str) -> None:
    """20 draws often miss the rare harmful sites: the interval must still hold the exact RA."""
    space = _space()
    oracle = TableOracle(space, _table(space), SA)
    exact = exact_from_table(space, oracle.table, SA)
    runs = [est.get(name, **({"pilot": 64} if name == "is-b" else {})).estimate(oracle, samples=20, seed=s)
            for s in range(100)]
    assert min(r.half_width for r in runs) > 0.005
    assert np.mean([r.ci[0] <= exact.ra <= r.ci[1] for r in runs]) >= 0.9
    assert np.mean([r.software_ci[0] <= exact.software <= r.software_ci[1] for r in runs]) >= 0.9


def test_twenty_harmless_draws_do_not_give_a_zero_width_interval() -> None:
    """All 20 draws missed the harmful sites (1 site in 20): the sample spread is 0, the interval is not."""
    space = _space()
    table = np.where(np.arange(space.size) % 20 == 0, 0.0, SA)
    oracle = TableOracle(space, table, SA)
    exact = exact_from_table(space, table, SA)
    missed = next(r for r in (est.get("is").estimate(oracle, samples=20, seed=s) for s in range(200))
                  if (r.records["accuracy"] == SA).all())
    assert missed.std == 0.0
    assert missed.ci[0] <= exact.ra <= missed.ci[1]
    assert missed.ci[1] - missed.ci[0] > 0.01


def test_intervals_stay_inside_0_and_1() -> None:
    """A perfect model on an accelerator whose control faults never crash: RA near 1, spread wide."""
    space = _space(crash=0.0)
    table = _table(space) / SA  # SA = 1: every fault can only cost accuracy
    oracle = TableOracle(space, table, 1.0)
    for name in ("uniform", "mac", "is"):
        for seed in range(20):
            r = est.get(name).estimate(oracle, samples=20, seed=seed)
            assert 0.0 <= r.ci[0] <= r.ra <= r.ci[1] <= 1.0
            assert 0.0 <= r.software_ci[0] <= r.software <= r.software_ci[1] <= 1.0


@pytest.mark.parametrize("name", ["uniform", "mac", "is", "is-b"])
def test_with_enough_draws_the_interval_is_the_plain_t_interval(name: str) -> None:
    """The small-sample floor fades: at 3,000 draws it no longer widens the interval."""
    from scipy.stats import t

    space = _space()
    oracle = TableOracle(space, _table(space), SA)
    r = est.get(name).estimate(oracle, samples=3000, seed=0)
    assert r.half_width == pytest.approx(t.ppf(0.975, 2999) * r.std / np.sqrt(3000), rel=1e-9)


@pytest.mark.parametrize("name", ["uniform", "mac", "is"])
def test_per_sample_spread_matches_the_exact_variance(name: str) -> None:
    space = _space()
    table = _table(space)
    oracle = TableOracle(space, table, SA)
    estimator = est.get(name)
    proposal = estimator.proposal(space, oracle, np.random.default_rng(0), None)
    expected = proposal_std(space, proposal, table, SA)
    measured = estimator.estimate(oracle, samples=40000, seed=1).std
    assert measured == pytest.approx(expected, rel=0.1)


def test_is_b_needs_fewer_samples_than_uniform_when_harm_sits_in_few_bits() -> None:
    space = _space()
    table = _table(space)
    oracle = TableOracle(space, table, SA)
    isb = est.get("is-b", pilot=128)
    proposal = isb.proposal(space, oracle, np.random.default_rng(0), None)
    assert isb.harm_[7] > isb.harm_[0]
    uniform = est.get("uniform").proposal(space, oracle, None, None)
    assert proposal_std(space, proposal, table, SA) < 0.5 * proposal_std(space, uniform, table, SA)


def test_is_b_with_no_measured_harm_falls_back_to_p() -> None:
    space = _space()
    oracle = TableOracle(space, np.full(space.size, SA), SA)
    result = est.get("is-b", pilot=64).estimate(oracle, samples=50)
    assert result.ra == pytest.approx(space.p_software * SA)
    assert result.pilot > 0 and result.std == pytest.approx(0.0)


def test_bad_arguments_are_clear_errors() -> None:
    space = _space()
    oracle = TableOracle(space, _table(space), SA)
    assert list_estimators() == ["uniform", "mac", "is", "is-b", "exact"]
    with pytest.raises(ValueError, match="samples"):
        est.get("is").estimate(oracle, samples=0)
    with pytest.raises(ValueError, match="uniform, mac, is, is-b, exact"):
        est.get("stratified")
    with pytest.raises(ValueError, match="pilot"):
        est.get("is-b", pilot=0)
    with pytest.raises(ValueError, match="one accuracy per site"):
        TableOracle(space, np.zeros(3), SA)


def test_is_b_pilot_reads_the_subset_table_and_pays_for_it() -> None:
    space = _space()
    full, subset = _table(space), np.full(space.size, SA)  # the subset shows no harm at all
    oracle = TableOracle(space, full, SA, n_images=200, subsets={25: (subset, SA)})
    isb = est.get("is-b", pilot=64)
    result = isb.estimate(oracle, samples=20)
    assert np.all(result.harm == 0)  # harm measured on the subset, not on the full table
    assert result.pilot_cost == pytest.approx(result.pilot * 25 / 200)
    whole = est.get("is-b", pilot=64, pilot_images=None).estimate(oracle, samples=20)
    assert whole.harm[7] > 0 and whole.pilot_cost == whole.pilot


def test_pilot_subsets_that_are_missing_or_wrong_are_clear_errors() -> None:
    space = _space()
    oracle = TableOracle(space, _table(space), SA, n_images=200)
    with pytest.raises(ValueError, match="no table for the first 25 of 200 images"):
        est.get("is-b").estimate(oracle, samples=10)
    with pytest.raises(ValueError, match="pilot_images"):
        est.get("is-b", pilot_images=0)
    with pytest.raises(ValueError, match="one accuracy per site"):
        TableOracle(space, _table(space), SA, n_images=200, subsets={25: (np.zeros(2), SA)})


def test_the_floor_counts_harmful_draws_by_their_weight() -> None:
    """One large move among many tiny ones is about one harmful draw: the spread is not trusted."""
    from scipy.stats import t

    reach = np.ones(40)
    few = np.r_[np.full(30, 0.001), 0.5, np.zeros(9)]
    many = np.full(40, 0.01)
    for moves, floored in ((few, True), (many, False)):
        mean, ci, std = est._mean_ci(0.7 - moves, moves, reach)
        plain = t.ppf(0.975, 39) * std / np.sqrt(40)
        assert (ci[1] - ci[0]) / 2 > 2 * plain if floored else (ci[1] - ci[0]) / 2 == pytest.approx(plain)

"""Across-seed statistics against scipy and against brute-force enumeration of the bootstrap."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headstrong.metrics import summarize
from headstrong.metrics.paired import across_seeds, bootstrap_paired, layer_mean, mean_draws, paired_t


@pytest.mark.parametrize("confidence", [0.99, 0.95])
def test_across_seeds_matches_scipy_t_interval(confidence: float) -> None:
    values = [1.8, 2.4, 1.1, 3.0, 2.2]
    spread = across_seeds(values, confidence)
    low, high = stats.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert spread.mean == pytest.approx(np.mean(values)) and spread.std == pytest.approx(np.std(values, ddof=1))
    assert spread.median == pytest.approx(2.2) and spread.n == 5
    assert (spread.low, spread.high) == pytest.approx((low, high))
    one = across_seeds([2.0])
    assert one.mean == 2.0 and math.isnan(one.std) and math.isnan(one.low)
    with pytest.raises(ValueError, match="non-empty"):
        across_seeds([])


@pytest.mark.parametrize("log", [False, True])
def test_paired_t_matches_scipy_ttest_rel(log: bool) -> None:
    a = np.array([0.31, 0.27, 0.40, 0.35, 0.29])
    b = np.array([0.18, 0.20, 0.22, 0.25, 0.15])
    result = paired_t(a, b, log=log, confidence=0.99)
    x, y = (np.log(a), np.log(b)) if log else (b, a)  # log: log A - log B; plain: B - A
    test = stats.ttest_rel(x, y)
    ci = test.confidence_interval(0.99)
    assert result.p_value == pytest.approx(test.pvalue)
    expected = (math.exp(ci.low), math.exp(ci.high)) if log else (ci.low, ci.high)
    assert (result.low, result.high) == pytest.approx(expected)
    assert result.kind == ("ratio" if log else "difference") and result.decided
    if log:
        assert result.estimate == pytest.approx(math.exp(np.mean(np.log(a / b))))
        assert result.words("baseline", "text") == "text beats baseline (the 99% interval excludes 1)"
    else:
        assert result.words("baseline", "text") == "text beats baseline (the 99% interval excludes 0)"


def test_paired_t_says_when_the_interval_includes_no_difference() -> None:
    result = paired_t([1.0, 2.0, 1.5], [1.2, 1.7, 1.6], log=True)
    assert not result.decided
    assert result.words("a", "b") == "no clear difference: the 99% interval includes 1"
    single = paired_t([1.0], [0.5], log=True)
    assert single.estimate == pytest.approx(2.0) and not single.decided and "no interval" in single.words("a", "b")
    zero = paired_t([1.0, 1.0], [0.0, 0.5], log=True)  # a ΔLoss of 0: the ratio is not finite
    assert math.isnan(zero.estimate) and not zero.decided
    with pytest.raises(ValueError, match="equally long"):
        paired_t([1.0, 2.0], [1.0])


def _stratified_records(seed: int = 0) -> pd.DataFrame:
    """Unequal allocation over three strata; weight faults meeting 3 images each; a NaN outcome."""
    rng = np.random.default_rng(seed)
    rows = []
    fault = 0
    for stratum, (weight, n, scale) in enumerate([(0.7, 5, 0.01), (0.2, 9, 1.0), (0.1, 4, 20.0)]):
        for _ in range(n):
            for _ in range(3):
                rows.append({"layer": "fc", "stratum": stratum, "weight": weight, "fault_id": fault,
                             "delta_loss": float(rng.exponential(scale)), "golden_pred": 0, "faulty_pred": 0,
                             "top2_diff": 50.0, "nonfinite": False})
            fault += 1
    frame = pd.DataFrame(rows)
    frame.loc[4, ["delta_loss", "nonfinite"]] = [math.nan, True]
    return frame


def test_layer_mean_equals_summarize_under_unequal_allocation() -> None:
    records = _stratified_records()
    assert layer_mean(records) == pytest.approx(summarize(records, by=()).iloc[0]["delta_loss_mean"])
    plain = records.drop(columns=["stratum", "weight", "fault_id"])
    assert layer_mean(plain) == pytest.approx(summarize(plain, by=()).iloc[0]["delta_loss_mean"])


def _exact_bootstrap(values_by_stratum: list[list[float]], weights: list[float]) -> np.ndarray:
    """Every equally likely resample of every stratum (the bootstrap's exact distribution)."""
    per_stratum = [list(itertools.product(v, repeat=len(v))) for v in values_by_stratum]
    w = np.asarray(weights) / sum(weights)
    return np.array([sum(wh * np.mean(pick) for wh, pick in zip(w, picks))
                     for picks in itertools.product(*per_stratum)])


def test_mean_draws_match_the_enumerated_bootstrap() -> None:
    values = [[0.1, 0.4, 2.0], [5.0, 1.0], [0.0, 3.0, 0.5]]
    weights = [0.5, 0.3, 0.2]
    records = pd.DataFrame([{"stratum": h, "weight": weights[h], "delta_loss": v}
                            for h, vs in enumerate(values) for v in vs])
    exact = _exact_bootstrap(values, weights)
    draws = mean_draws(records, rounds=40_000, rng=np.random.default_rng(1))
    assert draws.mean() == pytest.approx(exact.mean(), rel=0.01)
    assert draws.std() == pytest.approx(exact.std(), rel=0.02)
    for q in (0.05, 0.5, 0.95):
        assert np.quantile(draws, q) == pytest.approx(np.quantile(exact, q), abs=0.06)


def test_mean_draws_resample_faults_not_images() -> None:
    records = _stratified_records()
    draws = mean_draws(records, rounds=500, rng=np.random.default_rng(0))
    assert draws.shape == (500,) and np.all(np.isfinite(draws))
    # with one image per fault, the same faults' images as independent draws would narrow the spread
    as_pairs = records.drop(columns=["fault_id"])
    narrow = mean_draws(as_pairs, rounds=500, rng=np.random.default_rng(0))
    assert draws.std() > narrow.std()


def _exact_two_level(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Every equally likely round of the two-level bootstrap: seeds with replacement, then one
    draw of each arm per drawn seed."""
    n = len(a)
    out = []
    for seeds in itertools.product(range(n), repeat=n):
        choices = [itertools.product(range(len(a[s])), range(len(b[s]))) for s in seeds]
        for picks in itertools.product(*[list(c) for c in choices]):
            out.append(np.mean([math.log(a[s][i]) - math.log(b[s][j]) for s, (i, j) in zip(seeds, picks)]))
    return np.array(out)


def test_bootstrap_paired_matches_the_enumerated_two_level_bootstrap() -> None:
    a = [np.array([1.0, 1.3]), np.array([2.0, 2.6])]
    b = [np.array([0.5, 0.6]), np.array([1.5, 1.1])]
    exact = _exact_two_level(a, b)
    result = bootstrap_paired(a, b, [1.1, 2.2], [0.55, 1.3], confidence=0.9, rounds=60_000, seed=3)
    assert result.estimate == pytest.approx(math.exp(np.mean([math.log(1.1 / 0.55), math.log(2.2 / 1.3)])))
    low, high = np.quantile(exact, [0.05, 0.95], method="inverted_cdf")
    assert math.log(result.low) == pytest.approx(low, abs=0.03)
    assert math.log(result.high) == pytest.approx(high, abs=0.03)
    assert result.method == "bootstrap over seeds and faults"


def test_bootstrap_paired_decides_only_a_clear_difference() -> None:
    rng = np.random.default_rng(0)
    seeds = 5
    base = [rng.exponential(1.0, 400) for _ in range(seeds)]
    same = [rng.exponential(1.0, 400) for _ in range(seeds)]
    halved = [0.5 * rng.exponential(1.0, 400) for _ in range(seeds)]
    draws = [[mean_draws(pd.DataFrame({"delta_loss": v}), rounds=400, rng=rng) for v in arm]
             for arm in (base, same, halved)]
    points = [[float(v.mean()) for v in arm] for arm in (base, same, halved)]
    tie = bootstrap_paired(draws[0], draws[1], points[0], points[1], rounds=2000)
    assert not tie.decided
    better = bootstrap_paired(draws[0], draws[2], points[0], points[2], rounds=2000)
    assert better.decided and 1.6 < better.estimate < 2.5
    assert better.words("baseline", "halved") == "halved beats baseline (the 99% interval excludes 1)"
    with pytest.raises(ValueError, match="same non-empty number of seeds"):
        bootstrap_paired(draws[0], draws[1][:2], points[0], points[1])


def test_paired_rate_change_uses_only_the_items_that_changed() -> None:
    """Accuracy before and after on the same images: 4 of 100 images turn wrong, 1 turns right."""
    import numpy as np

    from headstrong.metrics import paired_rate_change

    before = np.ones(100, dtype=bool)
    before[:10] = False
    after = before.copy()
    after[10:14] = False  # 4 right -> wrong
    after[0] = True  # 1 wrong -> right
    change, low, high = paired_rate_change(before, after, 0.95)
    diff = after.astype(float) - before.astype(float)
    half = 1.959964 * diff.std(ddof=1) / 10
    assert change == pytest.approx(-0.03) and (low, high) == pytest.approx((-0.03 - half, -0.03 + half), rel=1e-3)
    assert paired_rate_change(before, before) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same non-empty set"):
        paired_rate_change(before, after[:50])

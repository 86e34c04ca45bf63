"""Across seeds: every arm of a study (a head, a hardening, or both) against the others, paired by seed.

An arm is one (init, hardening) of a backbone; the study gives every arm of a seed the same data
order and, in the layers they share, the same fault sites, so two arms are compared seed by seed
(``headstrong.metrics.paired``):

- mean ΔLoss (last layer; all layers = the mean of each layer's mean, over the run's own layers):
  the ratio A / B (B's improvement over A) with a two-level bootstrap over seeds and faults, and
  beside it the paired t test across seeds on the logs;
- median ΔLoss of the last layer (the robust figure for weight faults, whose means a few exponent
  flips rule) and mismatch rates: the difference B - A with a paired t test across seeds.

Every row says in words whether its interval excludes no difference.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from headstrong.metrics.paired import across_seeds, bootstrap_paired, layer_mean, mean_draws, paired_t

ROUNDS = 2000
ALL_ZERO = "mean ΔLoss 0 in every seed"  # the method of a comparison where an arm corrected every fault

# figure -> (what it is, whether it is a mean ΔLoss compared as a ratio)
FIGURES = {
    "delta_loss_last": ("mean ΔLoss, last layer", True),
    "delta_loss_all": ("mean ΔLoss, all layers", True),
    "median_delta_loss_last": ("median ΔLoss, last layer", False),
    "mismatch_last": ("mismatch rate, last layer", False),
    "mismatch_all": ("mismatch rate, all layers", False),
}


def arm_label(init: str, hardening: str) -> str:
    return init if hardening == "none" else f"{init} + {hardening}"


@dataclass
class _Figures:
    """One cell's figures in one campaign, with the bootstrap draws of the two mean ΔLoss."""

    values: dict[str, float]
    draws: dict[str, np.ndarray]


def _figures(run: Any, rounds: int, rng: np.random.Generator) -> _Figures:
    records, per_layer = run.records, run.per_layer
    layers = [str(n) for n in per_layer["layer"]]
    by_layer = {name: group for name, group in records.groupby("layer", sort=False, observed=True)}
    means, draws = [], []
    for name in layers:
        means.append(layer_mean(by_layer[name]))
        draws.append(mean_draws(by_layer[name], rounds, rng))
    last = per_layer.iloc[-1]
    values = {
        "delta_loss_last": means[-1], "delta_loss_all": float(np.mean(means)),
        "median_delta_loss_last": float(last["delta_loss_median"]),
        "mismatch_last": float(last["mismatch_rate"]), "mismatch_all": float(per_layer["mismatch_rate"].mean()),
    }
    return _Figures(values, {"delta_loss_last": draws[-1], "delta_loss_all": np.mean(draws, axis=0)})


def seed_tables(cells: Sequence[Any], *, rounds: int = ROUNDS, confidence: float = 0.99,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(spread, paired)`` over a study's cells (``pipeline.CellResult``).

    spread: one row per (backbone, campaign, arm, figure): the per-seed values, their mean,
    standard deviation, median and t interval of the mean. paired: one row per (backbone,
    campaign, figure, arm A, arm B) for every two arms with common seeds (A before B in the grid's
    order, so the unhardened baseline is always A).
    """
    rng = np.random.default_rng(seed)
    figures: dict[tuple[str, str, str], dict[int, _Figures]] = {}
    order: list[str] = []
    for cell in cells:
        arm = arm_label(cell.cell.init, cell.cell.hardening)
        if arm not in order:
            order.append(arm)
        for name, run in cell.campaigns.items():
            figures.setdefault((cell.cell.backbone, name, arm), {})[cell.cell.seed] = _figures(run, rounds, rng)
    spread_rows, paired_rows = [], []
    groups = sorted({(b, c) for b, c, _ in figures}, key=lambda k: (k[0], k[1]))
    for backbone, campaign in groups:
        arms = [a for a in order if (backbone, campaign, a) in figures]
        for arm in arms:
            by_seed = figures[(backbone, campaign, arm)]
            for figure, (title, _) in FIGURES.items():
                values = [by_seed[s].values[figure] for s in sorted(by_seed)]
                spread = across_seeds(values, confidence)
                spread_rows.append({"backbone": backbone, "campaign": campaign, "arm": arm, "figure": figure,
                                    "title": title, "seeds": len(values),
                                    "values": " ".join(f"{v:.4g}" for v in values), "mean": spread.mean,
                                    "std": spread.std, "median": spread.median, "ci_low": spread.low,
                                    "ci_high": spread.high})
        for a, b in itertools.combinations(arms, 2):
            fa, fb = figures[(backbone, campaign, a)], figures[(backbone, campaign, b)]
            common = sorted(set(fa) & set(fb))
            if not common:
                continue
            for figure in FIGURES:
                paired_rows.append({"backbone": backbone, "campaign": campaign, "figure": figure, "a": a, "b": b,
                                    **_compare(figure, [fa[s] for s in common], [fb[s] for s in common],
                                               a, b, rounds, confidence, seed)})
    return pd.DataFrame(spread_rows), pd.DataFrame(paired_rows)


def _compare(figure: str, fa: list[_Figures], fb: list[_Figures], a: str, b: str, rounds: int,
             confidence: float, seed: int) -> dict[str, Any]:
    title, ratio = FIGURES[figure]
    va, vb = [f.values[figure] for f in fa], [f.values[figure] for f in fb]
    row: dict[str, Any] = {"title": title, "seeds": len(va)}
    zeros = _zeros(va, vb, a, b) if ratio else None
    if zeros is not None:
        row.update(zeros)
    elif ratio:
        boot = bootstrap_paired([f.draws[figure] for f in fa], [f.draws[figure] for f in fb], va, vb,
                                confidence=confidence, rounds=rounds, seed=seed)
        t = paired_t(va, vb, log=True, confidence=confidence)
        decided, reading = _both(boot, t, a, b)
        row.update(kind="ratio", estimate=boot.estimate, ci_low=boot.low, ci_high=boot.high, method=boot.method,
                   decided=decided, reading=reading, t_low=t.low, t_high=t.high, p_value=t.p_value,
                   t_reading=t.words(a, b))
    else:
        t = paired_t(va, vb, log=False, confidence=confidence)
        row.update(kind="difference", estimate=t.estimate, ci_low=t.low, ci_high=t.high, method=t.method,
                   decided=t.decided, reading=t.words(a, b), t_low=t.low, t_high=t.high, p_value=t.p_value,
                   t_reading=t.words(a, b))
    return row


def _zeros(va: list[float], vb: list[float], a: str, b: str) -> dict[str, Any] | None:
    """A mean ΔLoss of exactly 0 in every seed (a duplicated layer corrects each of its faults)
    has no ratio to bootstrap; say what the figures show instead."""
    za, zb = all(v == 0 for v in va), all(v == 0 for v in vb)
    if not (za or zb):
        return None
    common = dict(kind="ratio", method=ALL_ZERO, t_low=math.nan, t_high=math.nan,
                  p_value=math.nan)
    if za and zb:
        return {**common, "estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0, "decided": False,
                "reading": "no difference: both are 0 in every seed", "t_reading": "both 0 in every seed"}
    if not all(v > 0 for v in (va if zb else vb)):
        return None
    better, value = (b, math.inf) if zb else (a, 0.0)
    worse = a if better == b else b
    reading = f"{better} beats {worse}: {better}'s mean ΔLoss is 0 in every seed (each fault corrected)"
    return {**common, "estimate": value, "ci_low": value, "ci_high": value, "decided": True, "reading": reading,
            "t_reading": reading}


def _both(boot: Any, t: Any, a: str, b: str) -> tuple[bool, str]:
    """A ratio is decided only where the bootstrap over seeds and faults and the paired t test
    across seeds agree: with few seeds, drawing seeds again understates their spread, while the
    t test alone ignores how few faults a seed's figure rests on. One seed: the bootstrap over
    faults, and the reading says it speaks for one trained model only."""
    if boot.n_seeds < 2:
        return boot.decided, boot.words(a, b) + "; one seed: faults only, not training"
    if boot.decided and t.decided and (boot.low > 1) == (t.low > 1):
        return True, boot.words(a, b).replace("the 99% interval excludes", "both 99% intervals exclude")
    if boot.decided:
        return False, "no clear difference: the paired t interval across seeds includes 1 (the bootstrap's does not)"
    return False, boot.words(a, b)


def paired_markdown_rows(paired: pd.DataFrame, figures: Sequence[str], against: str | None = None
                         ) -> tuple[list[str], list[list[str]]]:
    """Rows for a report table: B against A per figure, with the interval and its reading.

    ``against``: keep only comparisons whose A is that arm (e.g. "baseline")."""
    headings = ["backbone", "campaign", "A", "B", "seeds", "figure", "B against A (ΔLoss mean: A / B; else B - A) [99%]", "reading"]
    rows = []
    table = paired[paired["figure"].isin(figures)]
    if against is not None:
        table = table[table["a"] == against]
    for _, r in table.iterrows():
        rows.append([r["backbone"], r["campaign"], r["a"], r["b"], str(r["seeds"]), r["title"],
                     _interval_text(r), r["reading"]])
    return headings, rows


def _interval_text(row: pd.Series) -> str:
    def fmt(x: float) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"

    unit = "x" if row["kind"] == "ratio" else ""
    scale = 100.0 if row["kind"] == "difference" and str(row["figure"]).startswith("mismatch") else 1.0
    if scale != 1.0:
        unit = " pp"
    return (f"{fmt(row['estimate'] * scale)}{unit} [{fmt(row['ci_low'] * scale)}, {fmt(row['ci_high'] * scale)}]")


def decided_summary(paired: pd.DataFrame) -> tuple[str, list[str], list[list[str]]]:
    """For a terminal: the comparisons of mean ΔLoss whose intervals rule out no difference, and a
    line saying how many of all comparisons that is (the rest read "no clear difference")."""
    ratios = paired[paired["kind"] == "ratio"] if not paired.empty else paired
    decided = ratios[ratios["decided"]] if not ratios.empty else ratios
    line = (f"{len(decided)} of {len(ratios)} comparisons of mean ΔLoss rule out 'no difference' at 99% "
            "(the rest: no clear difference; every pair and figure in paired.csv)")
    if not ratios.empty and int(ratios["seeds"].max()) <= 1:
        line += ". With one seed these intervals cover the faults only: another training seed may differ"
    headings = ["backbone", "campaign", "A", "B", "ΔLoss", "A / B [99%]", "better", "seeds"]
    rows = [[r["backbone"], r["campaign"], r["a"], r["b"], r["title"].split(", ")[-1], _interval_text(r),
             r["b"] if r["ci_low"] > 1 else r["a"], str(r["seeds"])]
            for _, r in decided.iterrows() if r["figure"] in ("delta_loss_last", "delta_loss_all")]
    return line, headings, rows


"""Resilience against cost, in one picture and the table behind it.

For each (backbone, head, hardening) against the unhardened model of the same backbone: the
ΔLoss improvement (unhardened mean ΔLoss / hardened mean ΔLoss) over all layers and in the last
layer, each with a 99% bootstrap interval over the faults; the clean accuracy change in
percentage points with a 95% paired interval; and the measured overhead (parameters, MACs,
median CPU latency). The figure plots accuracy change against improvement, one panel for all
layers and one for the last layer, marker size the latency overhead.

Means follow DESIGN.md: per layer, the mean ΔLoss over finite outcomes (non-finite ones are
counted apart); "all layers" is the mean of the per-layer means, so every layer weighs the same
in both models. Every figure says whether the campaign's range detector was on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["Ratio", "HardeningRow", "improvement", "accuracy_change", "hardening_table", "cost_figure",
           "markdown_table", "mean_delta_loss", "median_delta_loss"]


@dataclass(frozen=True)
class Ratio:
    """A ratio with its interval (``low``, ``high``) and the level of that interval."""

    value: float
    low: float
    high: float
    level: float = 0.99

    def includes(self, x: float) -> bool:
        return self.low <= x <= self.high

    def text(self, fmt: str = "{:.3g}") -> str:
        """'1.65x [0.17, 3.34]', with '(includes 1)' where the interval includes no effect."""
        words = " (includes 1)" if self.includes(1.0) else ""
        return f"{fmt.format(self.value)}x [{fmt.format(self.low)}, {fmt.format(self.high)}]{words}"


@dataclass
class HardeningRow:
    """One hardened model against its unhardened reference."""

    backbone: str
    head: str
    hardening: str
    range_detector: bool
    top1_reference: float  # percent
    top1: float
    accuracy_change_pp: Ratio  # value, low, high in pp (level 0.95)
    improvement_all: Ratio
    improvement_last: Ratio
    delta_loss_all: float
    delta_loss_all_reference: float
    delta_loss_last: float
    delta_loss_last_reference: float
    median_delta_loss_all: float
    median_delta_loss_all_reference: float
    params: int
    params_reference: int
    macs: int
    macs_reference: int
    latency_overhead: Ratio  # a share: 0.03 = +3% (level 0.95)

    def flat(self) -> dict[str, Any]:
        data = asdict(self)
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out[key] = value["value"]
                out[f"{key}_low"], out[f"{key}_high"] = value["low"], value["high"]
            else:
                out[key] = value
        return out


def _finite_by_layer(records: pd.DataFrame, layers: Sequence[str]) -> list[np.ndarray]:
    values = []
    for layer in layers:
        rows = records[records["layer"] == layer]
        v = rows["delta_loss"].to_numpy(dtype=np.float64)
        values.append(v[np.isfinite(v)])
    return values


def _boot_means(values: list[np.ndarray], rounds: int, rng: np.random.Generator) -> np.ndarray:
    """[rounds] bootstrap draws of the mean over layers of the per-layer mean ΔLoss."""
    draws = np.zeros(rounds)
    for v in values:
        if len(v) == 0:
            draws += math.nan
            continue
        pick = rng.integers(0, len(v), size=(rounds, len(v)))
        draws += v[pick].mean(axis=1)
    return draws / max(1, len(values))


def improvement(reference: pd.DataFrame, hardened: pd.DataFrame, layers: Sequence[str] | None = None,
                hardened_layers: Sequence[str] | None = None, *, rounds: int = 1000, level: float = 0.99,
                seed: int = 0) -> Ratio:
    """reference ΔLoss / hardened ΔLoss: the mean over ``layers`` of the per-layer mean ΔLoss in
    each run (default: each run's own layers, so a head with an extra projection still compares
    "all layers"), with a percentile bootstrap interval resampling each layer's faults."""
    layers = list(dict.fromkeys(reference["layer"])) if layers is None else list(layers)
    if hardened_layers is None:
        hardened_layers = layers if set(layers) <= set(hardened["layer"]) else list(dict.fromkeys(hardened["layer"]))
    missing = [n for n in hardened_layers if n not in set(hardened["layer"])]
    if missing:
        raise ValueError(f"the hardened run lacks layer(s) {', '.join(missing)}; compare runs over the same layers")
    a, b = _finite_by_layer(reference, layers), _finite_by_layer(hardened, hardened_layers)
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(np.float64(_mean_of_means(a)) / np.float64(_mean_of_means(b)))
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = _boot_means(a, rounds, rng) / _boot_means(b, rounds, rng)
    ratios = ratios[~np.isnan(ratios)]
    if len(ratios) == 0:
        return Ratio(float(point), math.nan, math.nan, level)
    # "inverted_cdf" picks observed draws: no arithmetic on inf (a hardened layer where no fault
    # survived gives an infinite ratio, and its interval may reach inf)
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return Ratio(float(point), float(low), float(high), level)


def _mean_of_means(values: list[np.ndarray]) -> float:
    means = [v.mean() if len(v) else math.nan for v in values]
    return float(np.mean(means)) if means else math.nan


def mean_delta_loss(records: pd.DataFrame, layers: Sequence[str] | None = None) -> float:
    """The mean over layers of each layer's mean finite ΔLoss."""
    layers = list(dict.fromkeys(records["layer"])) if layers is None else list(layers)
    return _mean_of_means(_finite_by_layer(records, layers))


def median_delta_loss(records: pd.DataFrame) -> float:
    v = records["delta_loss"].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else math.nan


def accuracy_change(correct_reference: Sequence[bool], correct: Sequence[bool], level: float = 0.95) -> Ratio:
    """Paired accuracy change in percentage points on the same images, with a normal interval."""
    from headstrong.metrics import paired_rate_change

    change, low, high = paired_rate_change(np.asarray(correct_reference), np.asarray(correct), level)
    return Ratio(100 * change, 100 * low, 100 * high, level)


def hardening_table(rows: Sequence[HardeningRow]) -> pd.DataFrame:
    return pd.DataFrame([row.flat() for row in rows])


def _zero_words(change: Ratio) -> str:
    """A change whose interval includes 0 says so (an unchanged accuracy, [0, 0], does not need to)."""
    return " (includes 0)" if change.low < 0 < change.high else ""


def markdown_table(rows: Sequence[HardeningRow]) -> str:
    """The table a paper needs, with every ratio's interval."""
    head = ("| backbone | head | hardening | top-1 (%) | Δacc (pp) [95%] | ΔLoss all: ref / hard | improvement all [99%] "
            "| ΔLoss last: ref / hard | improvement last [99%] | MACs +% | params +% | latency +% [95%] |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lat = r.latency_overhead
        lines.append(
            f"| {r.backbone} | {r.head} | {r.hardening} | {r.top1:.2f} "
            f"| {r.accuracy_change_pp.value:+.2f} [{r.accuracy_change_pp.low:+.2f}, {r.accuracy_change_pp.high:+.2f}]"
            f"{_zero_words(r.accuracy_change_pp)} "
            f"| {r.delta_loss_all_reference:.3g} / {r.delta_loss_all:.3g} | {r.improvement_all.text()} "
            f"| {r.delta_loss_last_reference:.3g} / {r.delta_loss_last:.3g} | {r.improvement_last.text()} "
            f"| {100 * (r.macs / r.macs_reference - 1):+.2f} | {100 * (r.params / r.params_reference - 1):+.3f} "
            f"| {100 * lat.value:+.1f} [{100 * lat.low:+.1f}, {100 * lat.high:+.1f}]{_zero_words(lat)} |"
        )
    return "\n".join(lines) + "\n"


def cost_figure(rows: Sequence[HardeningRow], path: str | Path, title: Optional[str] = None) -> Path:
    """Accuracy change (pp) against improvement (log scale), all layers and last layer; marker
    area grows with the latency overhead; intervals as error bars. An infinite improvement (no
    fault left any ΔLoss) is drawn at ten times the largest finite one, marked ∞."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    markers = {b: m for b, m in zip(dict.fromkeys(r.backbone for r in rows), "osD^v<>p")}
    names = list(dict.fromkeys(r.hardening if r.head == "baseline" else f"{r.head} + {r.hardening}" for r in rows))
    n_colours = 10 if len(names) <= 10 else 20
    cmap = plt.get_cmap(f"tab{n_colours}")

    def colours(i: int) -> Any:
        return cmap(i % n_colours)
    for ax, which in zip(axes, ("all", "last")):
        values = [(r.improvement_all if which == "all" else r.improvement_last).value for r in rows]
        finite = [v for v in values if math.isfinite(v) and v > 0]
        cap = 10 * max(finite) if finite else 10.0  # where "no fault survived" (an infinite ratio) is drawn
        for r in rows:
            ratio = r.improvement_all if which == "all" else r.improvement_last
            if ratio.value == math.inf:
                ratio = Ratio(cap, min(ratio.low, cap), cap, ratio.level)
                ax.annotate("∞", (cap, r.accuracy_change_pp.value), textcoords="offset points", xytext=(6, 4), fontsize=8)
            if not math.isfinite(ratio.value) or ratio.value <= 0:
                continue
            name = r.hardening if r.head == "baseline" else f"{r.head} + {r.hardening}"
            acc = r.accuracy_change_pp
            size = 30 + 600 * max(0.0, r.latency_overhead.value)
            low = max(ratio.value - ratio.low, 0) if math.isfinite(ratio.low) else 0
            high = max(ratio.high - ratio.value, 0) if math.isfinite(ratio.high) else 0
            colour = colours(names.index(name))
            ax.errorbar(ratio.value, acc.value, xerr=[[low], [high]], yerr=[[acc.value - acc.low], [acc.high - acc.value]],
                        fmt="none", ecolor=colour, alpha=0.5, lw=1)
            ax.scatter([ratio.value], [acc.value], s=size, marker=markers[r.backbone], color=colour, alpha=0.8,
                       edgecolors="black", linewidths=0.5)
        ax.set_xscale("log")
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel(f"ΔLoss improvement, {'all layers' if which == 'all' else 'last layer'} (unhardened / hardened)")
        ax.grid(True, which="both", alpha=0.2)
    axes[0].set_ylabel("clean accuracy change (pp)")
    detector = {r.range_detector for r in rows}
    note = "range detector " + ("on" if detector == {True} else "off" if detector == {False} else "mixed")
    fig.suptitle((title + " — " if title else "") + f"resilience against cost ({note}; marker size: latency overhead)")
    # one legend for colours (hardenings), one for markers (backbones)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colours(i), label=n) for i, n in enumerate(names)]
    handles += [Line2D([], [], marker=m, ls="", color="grey", label=b) for b, m in markers.items()]
    rows_needed = math.ceil(len(handles) / 4)
    bottom = min(0.45, 0.06 + 0.035 * rows_needed)
    fig.set_size_inches(12, 5 + 0.25 * rows_needed)
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 0.95))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path

"""PNG plots of campaign results (matplotlib, Agg backend: no display needed).

Runs are given as ``{label: CampaignResult-like}`` with ``per_layer`` and ``per_bit`` frames in the
columns of ``headstrong.metrics.summarize`` and layers in forward order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from headstrong.report.tables import drop_prefix, shared_prefix  # noqa: E402

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _short(name: str, limit: int = 26) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def align_layers(frames: Mapping[str, pd.DataFrame]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Slots shared by several runs: leading layers by position, the last layers (classifiers) together.

    Returns the slot labels and, per run, the slot of each of its rows (rows in forward order).
    A prefix most names share ("backbone.") is dropped from the labels.
    """
    leading = max(len(f) for f in frames.values()) - 1
    names: list[list[str]] = [[] for _ in range(leading + 1)]
    slots = {}
    for label, frame in frames.items():
        layers = [str(n) for n in frame["layer"]]
        slot = np.array(list(range(len(layers) - 1)) + [leading])
        for name, k in zip(layers, slot):
            if name not in names[k]:
                names[k].append(name)
        slots[label] = slot
    prefix = shared_prefix([n for group in names for n in group])
    labels = [" / ".join(_short(drop_prefix(n, prefix)) for n in group) for group in names]
    return labels, slots


def _layer_axis(per_layer: Mapping[str, pd.DataFrame]) -> str:
    """The layer axis's label, naming the prefix ``align_layers`` dropped from the tick labels."""
    names = list(dict.fromkeys(str(n) for frame in per_layer.values() for n in frame["layer"]))
    prefix = shared_prefix(names)
    return ("layer, in forward order (the last slot: each model's classifier)"
            + (f"; names without their '{prefix}' prefix" if prefix else ""))


def delta_loss_per_layer(per_layer: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """Mean ΔLoss per layer with its 99% interval (bars) and the median (diamonds), log scale.

    Several runs share the axes side by side (layers aligned as by ``align_layers``). A median of
    zero has no place on a log axis and is not drawn.
    """
    labels = list(per_layer)
    ticks, slots = align_layers(per_layer)
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(ticks) + 2.5), 4.4))
    for k, label in enumerate(labels):
        frame = per_layer[label].reset_index(drop=True)
        x = slots[label] + (k - (len(labels) - 1) / 2) * width
        mean = frame["delta_loss_mean"].to_numpy(float)
        low = np.clip(mean - frame["delta_loss_ci_low"].to_numpy(float), 0, None)
        high = np.clip(frame["delta_loss_ci_high"].to_numpy(float) - mean, 0, None)
        colour = _COLOURS[k % len(_COLOURS)]
        ax.bar(x, mean, width=width, color=colour, alpha=0.55, label=f"{label}: mean, 99% CI")
        ax.errorbar(x, mean, yerr=[np.minimum(low, mean * 0.999), high], fmt="none", ecolor="black",
                    elinewidth=0.8, capsize=2)
        median = frame["delta_loss_median"].to_numpy(float)
        shown = median > 0
        ax.scatter(x[shown], median[shown], marker="D", s=14, color=colour, edgecolor="black", linewidth=0.5,
                   zorder=3, label=f"{label}: median")
    ax.set_xticks(np.arange(len(ticks)), [f"{i}: {t}" for i, t in enumerate(ticks)], rotation=60, ha="right",
                  fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ΔLoss (log scale)")
    ax.set_xlabel(_layer_axis(per_layer))
    ax.set_title("ΔLoss per layer")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=7, ncols=2 if len(labels) > 1 else 1)
    return _save(fig, path)


NO_SAMPLE = "#d9d9d9"  # heat-map cells of a (layer, bit) that no sampled fault hit
PANELS_PER_ROW = 3


def mismatch_heatmap(per_bit: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """Mismatch rate (%) per (layer, bit position), one panel per run, at most three panels a row.

    Grey cells are (layer, bit) pairs that no sampled fault hit; the legend says so. All panels
    share one colour scale, so panels can be compared by colour; panels of runs over the same
    layers share the layer labels of the first panel in their row.
    """
    labels = list(per_bit)
    grids = {label: _grid(per_bit[label]) * 100 for label in labels}
    vmax = max(float(np.nanmax(g.to_numpy())) if g.size and np.isfinite(g.to_numpy()).any() else 0.0
               for g in grids.values()) or 1.0
    n_layers = max(g.shape[0] for g in grids.values())
    cols = min(PANELS_PER_ROW, len(labels))
    rows = -(-len(labels) // cols)
    same_layers = len({tuple(g.index) for g in grids.values()}) == 1
    prefix = shared_prefix([str(n) for g in grids.values() for n in g.index])
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 3.0, (0.2 * n_layers + 1.3) * rows + 1.0),
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("magma_r").with_extremes(bad=NO_SAMPLE)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= len(labels):
            ax.set_visible(False)
            continue
        grid = grids[labels[i]]
        image = ax.imshow(np.ma.masked_invalid(grid.to_numpy(float)), aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax,
                          interpolation="nearest")
        names = [_short(drop_prefix(str(n), prefix)) for n in grid.index] if i % cols == 0 or not same_layers else []
        ax.set_yticks(np.arange(grid.shape[0]), names, fontsize=7)
        step = max(1, grid.shape[1] // 16)
        ax.set_xticks(np.arange(0, grid.shape[1], step), [str(b) for b in grid.columns[::step]], fontsize=7)
        ax.set_xlabel("bit position (0 = least significant)", fontsize=8)
        ax.set_title(_short(labels[i], 40), fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="mismatch rate (%, silent data corruption)",
                 shrink=min(0.9, 0.35 + 0.2 * rows), aspect=25)
    note = f"layer names without their '{prefix}' prefix" if prefix else ""
    fig.suptitle("Mismatch rate per layer and bit position" + (f" ({note})" if note else ""), fontsize=11)
    fig.legend(handles=[Patch(facecolor=NO_SAMPLE, edgecolor="#999", label="no fault sampled at this (layer, bit)")],
               loc="outside lower right", fontsize=8, frameon=False)
    return _save(fig, path, tight=False)


def _grid(per_bit: pd.DataFrame) -> pd.DataFrame:
    """Layers (forward order) x bits (most significant left), NaN where a bit was not sampled."""
    layers = list(dict.fromkeys(per_bit["layer"]))
    grid = per_bit.pivot_table(index="layer", columns="bit", values="mismatch_rate", aggfunc="mean")
    return grid.reindex(index=layers, columns=sorted(grid.columns, reverse=True))


def _save(fig: plt.Figure, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def side_by_side(per_layer: Mapping[str, pd.DataFrame], metric: str, path: str | Path) -> Path:
    """One share (mismatch_rate, nonfinite_rate) per layer for every run, in %, layers aligned.

    Layers are categories, so the points are not joined by lines; a metric with a ``_ci_low`` /
    ``_ci_high`` pair gets its interval as error bars.
    """
    labels: Sequence[str] = list(per_layer)
    ticks, slots = align_layers(per_layer)
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * len(ticks) + 2.5), 4.0))
    name = metric.removesuffix("_rate")
    for k, label in enumerate(labels):
        frame = per_layer[label].reset_index(drop=True)
        x = slots[label] + (k - (len(labels) - 1) / 2) * width
        value = frame[metric].to_numpy(float) * 100
        yerr = None
        if f"{name}_ci_low" in frame.columns and f"{name}_ci_high" in frame.columns:
            low = np.clip(value - frame[f"{name}_ci_low"].to_numpy(float) * 100, 0, None)
            high = np.clip(frame[f"{name}_ci_high"].to_numpy(float) * 100 - value, 0, None)
            yerr = [low, high]
        ax.errorbar(x, value, yerr=yerr, fmt="o", ms=4, linestyle="none", elinewidth=0.8, capsize=2,
                    color=_COLOURS[k % len(_COLOURS)], label=label + (" (99% CI)" if yerr is not None else ""))
    ax.set_xticks(np.arange(len(ticks)), [f"{i}: {t}" for i, t in enumerate(ticks)], rotation=60, ha="right",
                  fontsize=7)
    ax.set_xlabel(_layer_axis(per_layer))
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.set_title(f"{metric.replace('_', ' ')} per layer (points are not joined: layers are categories)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)

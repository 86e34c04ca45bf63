"""Plots of fault-model campaigns: accuracy against bit-error rate, and the masked share of
stuck-at faults.

A run's fault model and its parameters come from its stored spec (``fault_model``, ``ber``).
Accuracy is the share of evaluated (fault, image) pairs whose faulty prediction is the label.
Runs of one model (the same ``model_fingerprint`` in their manifests) form one curve, so a
baseline and a text-guided model, each run at several rates, give two curves on one plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def fault_model_of(run: Any) -> str:
    """The run's fault model name (``flip`` for runs made before fault models existed)."""
    return getattr(run.spec, "fault_model", "flip") or "flip"


def ber_points(runs: Sequence[Any], labels: Sequence[str]) -> pd.DataFrame:
    """One row per ``ber`` run: curve (its model), label, p, accuracy and pairs evaluated."""
    rows = []
    curves: dict[str, str] = {}
    for run, label in zip(runs, labels):
        if fault_model_of(run) != "ber":
            continue
        key = str(run.manifest.get("model_fingerprint", label))
        curve = curves.setdefault(key, label)
        records = run.records
        accuracy = float((records["faulty_pred"] == records["label"]).mean()) if len(records) else float("nan")
        rows.append({"curve": curve, "label": label, "p": float(run.spec.ber), "accuracy": accuracy,
                     "pairs": len(records)})
    return pd.DataFrame(rows, columns=["curve", "label", "p", "accuracy", "pairs"])


def accuracy_vs_ber(runs: Sequence[Any], labels: Sequence[str], path: str | Path) -> Path:
    """Accuracy against bit-error rate (log x axis), one curve per model."""
    points = ber_points(runs, labels)
    if points.empty:
        raise ValueError("no ber runs to plot: give runs made with --fault-model ber")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (curve, group) in enumerate(points.groupby("curve", sort=False)):
        group = group.sort_values("p")
        ax.plot(group["p"], group["accuracy"] * 100, marker="o", color=_COLOURS[i % len(_COLOURS)], label=curve)
    ax.set_xscale("log")
    ax.set_xlabel("bit-error rate p")
    ax.set_ylabel("accuracy under faults (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def masked_shares(runs: Sequence[Any], labels: Sequence[str]) -> pd.DataFrame:
    """Per stuck-at run and layer: the share of (fault, image) pairs that changed no bit."""
    rows = []
    for run, label in zip(runs, labels):
        model = fault_model_of(run)
        if not model.startswith("stuck-at") or "masked" not in run.records.columns:
            continue
        shares = run.records.groupby("layer", sort=False)["masked"].mean()
        for layer, share in shares.items():
            rows.append({"label": f"{label} ({model})", "layer": str(layer), "masked_share": float(share)})
    return pd.DataFrame(rows, columns=["label", "layer", "masked_share"])


def masked_share(runs: Sequence[Any], labels: Sequence[str], path: str | Path) -> Path:
    """Bars: the masked share of stuck-at faults per layer, one colour per run."""
    shares = masked_shares(runs, labels)
    if shares.empty:
        raise ValueError("no stuck-at runs with a masked column to plot: give runs made with --fault-model stuck-at-0/1")
    layers = list(dict.fromkeys(shares["layer"]))
    groups = list(dict.fromkeys(shares["label"]))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(layers) * len(groups) + 2), 4.2))
    for i, group in enumerate(groups):
        mine = shares[shares["label"] == group].set_index("layer")["masked_share"]
        xs = [layers.index(n) + i * width for n in mine.index]
        ax.bar(xs, mine.values * 100, width=width, color=_COLOURS[i % len(_COLOURS)], label=group)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))])
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("masked (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

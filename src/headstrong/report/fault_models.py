"""Plots of fault-model campaigns: accuracy against bit-error rate, and the masked share of
stuck-at faults.

A run's fault model and its parameters come from its stored spec (``fault_model``, ``ber``).
Accuracy is the share of evaluated (fault, image) pairs whose faulty prediction is the label; with
``only_correct`` (the default) the images are those the golden model classifies correctly, so it
starts at 100% when no bit flips. Runs of one model (the same ``model_fingerprint`` in their
manifests) form one curve named after the model (``model_name``), so a baseline and a
text-guided model, each run at several rates, give two curves on one plot. The error bars are
99% intervals over faults: the images of one fault share its bit errors, so the fault, not the
(fault, image) pair, is the independent draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from headstrong.metrics import z_value  # noqa: E402
from headstrong.report.tables import drop_prefix, shared_prefix  # noqa: E402

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def fault_model_of(run: Any) -> str:
    """The run's fault model name (``flip`` for runs made before fault models existed)."""
    return getattr(run.spec, "fault_model", "flip") or "flip"


MODEL_FILE = "model.json"  # written beside a run by ``headstrong inject``: the model it was given


def model_name(run: Any) -> str:
    """The name of the model a run was made on, for legends.

    ``headstrong inject`` records the model it was given (a checkpoint is named by its folder when
    the file is the usual model.pt); runs made through the API fall back to the model's class and
    the start of its fingerprint.
    """
    import json

    out = getattr(run, "out", None)
    if out is not None and (Path(out) / MODEL_FILE).is_file():
        try:
            name = json.loads((Path(out) / MODEL_FILE).read_text()).get("name")
        except (ValueError, AttributeError):
            name = None
        if isinstance(name, str) and name:
            return name
    manifest = getattr(run, "manifest", {}) or {}
    cls = str(manifest.get("model_class", "model")).rsplit(".", 1)[-1]
    return f"{cls} {str(manifest.get('model_fingerprint', ''))[:6]}".strip()


def record_model(out: str | Path, given: str) -> Path:
    """Write ``model.json`` in a run folder: the model as given, and the name legends use for it.

    A checkpoint is named by its folder when the file has a generic name (``runs/fmnist-text/model.pt``
    -> ``fmnist-text``), else by its file name; a torchvision/timm name is its own name.
    """
    import json

    from headstrong._atomic import atomic_write

    path = Path(given)
    generic = {"model", "checkpoint", "last", "best", "final"}
    if path.suffix in (".pt", ".pth", ".ckpt"):
        name = path.parent.name if path.stem in generic and path.parent.name not in ("", ".") else path.stem
    else:
        name = given
    text = json.dumps({"model": given, "name": name}, indent=2)
    return atomic_write(Path(out) / MODEL_FILE, lambda tmp: Path(tmp).write_text(text))


def accuracy_over_faults(records: pd.DataFrame, confidence: float = 0.99) -> tuple[float, float, float, int]:
    """Accuracy under faults, with its interval over faults: (accuracy, low, high, faults), shares.

    Each fault's accuracy is the share of its images predicted right; the estimate is their mean
    (every fault meets the same number of images) and the interval is normal over faults, clipped
    to [0, 1]. One fault gives no interval (low = high = nan).
    """
    if records.empty:
        return float("nan"), float("nan"), float("nan"), 0
    per_fault = (records["faulty_pred"] == records["label"]).groupby(records["fault_id"]).mean().to_numpy(float)
    mean = float(per_fault.mean())
    if per_fault.size < 2:
        return mean, float("nan"), float("nan"), int(per_fault.size)
    half = z_value(confidence) * float(per_fault.std(ddof=1)) / np.sqrt(per_fault.size)
    return mean, max(0.0, mean - half), min(1.0, mean + half), int(per_fault.size)


def ber_points(runs: Sequence[Any], labels: Sequence[str]) -> pd.DataFrame:
    """One row per ``ber`` run: curve (its model's name), label, p, accuracy with its 99% interval,
    faults and pairs evaluated, and the share of faults that flipped no bit at all."""
    rows = []
    curves: dict[str, str] = {}
    for run, label in zip(runs, labels):
        if fault_model_of(run) != "ber":
            continue
        key = str(run.manifest.get("model_fingerprint", label))
        if key not in curves:
            name = model_name(run)
            curves[key] = name if name not in curves.values() else f"{name} ({key[:6]})"
        records = run.records
        accuracy, low, high, faults = accuracy_over_faults(records)
        untouched = float(records.groupby("fault_id")["masked"].all().mean()) if "masked" in records and len(records) else float("nan")
        rows.append({"curve": curves[key], "label": label, "p": float(run.spec.ber), "accuracy": accuracy,
                     "accuracy_ci_low": low, "accuracy_ci_high": high, "faults": faults, "pairs": len(records),
                     "no_bit_error": untouched, "only_correct": bool(run.spec.only_correct)})
    return pd.DataFrame(rows, columns=["curve", "label", "p", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                                       "faults", "pairs", "no_bit_error", "only_correct"])


def accuracy_vs_ber(runs: Sequence[Any], labels: Sequence[str], path: str | Path) -> Path:
    """Accuracy against bit-error rate (log x axis), one curve per model, with 99% error bars."""
    points = ber_points(runs, labels)
    if points.empty:
        raise ValueError("no ber runs to plot: give runs made with --fault-model ber")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (curve, group) in enumerate(points.groupby("curve", sort=False)):
        group = group.sort_values("p")
        acc = group["accuracy"].to_numpy(float) * 100
        low = np.nan_to_num(acc - group["accuracy_ci_low"].to_numpy(float) * 100)
        high = np.nan_to_num(group["accuracy_ci_high"].to_numpy(float) * 100 - acc)
        ax.errorbar(group["p"], acc, yerr=[low, high], marker="o", capsize=3, color=_COLOURS[i % len(_COLOURS)],
                    label=f"{curve} ({int(group['faults'].max())} faults a rate)")
    ax.set_xscale("log")
    ax.set_xlabel("bit-error rate p (each stored bit flips with probability p)")
    images = "golden-correct images" if points["only_correct"].all() else "images"
    ax.set_ylabel(f"accuracy under faults (% of {images})", fontsize=9)
    ax.set_title("Accuracy against bit-error rate (bars: 99% interval over faults)", fontsize=10)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
    prefix = shared_prefix(layers)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))])
    ax.set_xticklabels([drop_prefix(n, prefix) for n in layers], rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer, in forward order" + (f" (names without their '{prefix}' prefix)" if prefix else ""))
    ax.set_ylabel("masked (% of faults)")
    ax.set_title("Stuck-at faults that changed nothing: the stuck bit already held that value", fontsize=10)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

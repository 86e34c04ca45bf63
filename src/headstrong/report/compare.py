"""Comparing two campaigns (baseline vs text-guided): improvement per layer, last layer, overall.

The two models may differ (a text-guided model has a projection and a head where the baseline has
one classifier), so layers are matched by position in forward order: the layers before each
model's last one pair up from the start, and the two last layers (the classifiers) pair up as
"last layer". Layer names of both models are kept in the table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def match_layers(baseline: list[str], textguided: list[str]) -> list[tuple[str, str]]:
    """(baseline layer, text-guided layer) pairs: the leading layers by position, then the last two."""
    if not baseline or not textguided:
        raise ValueError("both runs need at least one layer to compare")
    pairs = list(zip(baseline[:-1], textguided[:-1]))
    pairs.append((baseline[-1], textguided[-1]))
    return pairs


def compare_runs(baseline: Any, textguided: Any) -> pd.DataFrame:
    """``metrics.improvement`` of two runs, layers matched by position; both layer names kept.

    Rows: every matched leading layer, then "last layer" (the two classifiers) and "overall" (the
    ΔLoss averaged over all layers of each model, unmatched ones included).
    """
    from headstrong.metrics import improvement

    a, b = baseline.per_layer.reset_index(drop=True), textguided.per_layer.reset_index(drop=True)
    names_a, names_b = [str(n) for n in a["layer"]], [str(n) for n in b["layer"]]
    pairs = match_layers(names_a, names_b)
    keys_a = {name: f"baseline only: {name}" for name in names_a}
    keys_b = {name: f"text-guided only: {name}" for name in names_b}
    origin: dict[str, tuple[str, str]] = {}
    for name_a, name_b in pairs[:-1]:
        key = name_a if name_a == name_b else f"{name_a} / {name_b}"
        keys_a[name_a] = keys_b[name_b] = key
        origin[key] = (name_a, name_b)
    origin["last layer"] = pairs[-1]
    origin["overall"] = ("all", "all")
    left = a.assign(layer=[keys_a[n] for n in names_a])
    right = b.assign(layer=[keys_b[n] for n in names_b])
    table = improvement(left, right)
    table.insert(1, "baseline_layer", [origin.get(k, ("", ""))[0] for k in table["layer"]])
    table.insert(2, "textguided_layer", [origin.get(k, ("", ""))[1] for k in table["layer"]])
    return table

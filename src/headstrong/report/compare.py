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
    """``metrics.improvement`` over matched layers; columns name both layers of each row."""
    from headstrong.metrics import improvement

    a, b = baseline.per_layer, textguided.per_layer
    pairs = match_layers(list(a["layer"]), list(b["layer"]))
    keys = {pa: f"{i}" for i, (pa, _) in enumerate(pairs)}
    keys_b = {pb: f"{i}" for i, (_, pb) in enumerate(pairs)}
    left = a[a["layer"].isin(keys)].assign(layer=lambda f: f["layer"].map(keys))
    right = b[b["layer"].isin(keys_b)].assign(layer=lambda f: f["layer"].map(keys_b))
    table = improvement(left.reset_index(drop=True), right.reset_index(drop=True))
    table = table.reset_index() if "layer" not in table.columns else table
    names = {f"{i}": pair for i, pair in enumerate(pairs)}
    table.insert(1, "baseline_layer", table["layer"].map(lambda k: names.get(str(k), ("", ""))[0]))
    table.insert(2, "textguided_layer", table["layer"].map(lambda k: names.get(str(k), ("", ""))[1]))
    return table

"""Comparing two campaigns (baseline vs text-guided): improvement per layer, last layer, overall.

The two models may differ (a text-guided model has a projection and a head where the baseline has
one classifier), so layers are matched by position in forward order: the layers before each
model's last one pair up from the start, and the two last layers (the classifiers) pair up as
"last layer". Layer names of both models are kept in the table.

Only campaigns of the same kind can be compared: runs that differ in fault kind, number format,
fault model (or its parameters), the bits drawn, the range detector or the layer selection are
refused (``force=True`` compares them anyway), with what differs named.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


# Spec settings two compared runs must share, with how to name them in a refusal.
COMPARABLE = (("kind", "kind"), ("fmt", "format"), ("fault_model", "fault model"), ("bits", "bits"),
              ("range_detector", "range detector"), ("only_correct", "only_correct"))


def differences(baseline: Any, textguided: Any) -> list[str]:
    """What keeps two runs from being compared, one phrase each ("kind: neuron vs weight"); [] if nothing.

    Layers are compared as selected (``spec.layers``), since the two models' layer names differ by
    design; two explicit selections that name other layers are a difference.
    """
    from headstrong.campaign.spec import FAULT_OPTIONS

    a, b = baseline.spec, textguided.spec
    found = []
    keys = [*COMPARABLE, *((option, f"fault model's {option}") for option in FAULT_OPTIONS)]
    for key, name in keys:
        left, right = getattr(a, key, None), getattr(b, key, None)
        if key == "fault_model":
            left, right = left or "flip", right or "flip"
        if left != right:
            found.append(f"{name}: {_show(left)} vs {_show(right)}")
    if a.layers != b.layers and list(getattr(baseline, "layers", [])) != list(getattr(textguided, "layers", [])):
        found.append(f"layers: {_show(a.layers)} vs {_show(b.layers)}")
    return found


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) if value else "none"
    return "default" if value is None else str(value)


def check_comparable(baseline: Any, textguided: Any) -> None:
    """ValueError naming what differs when two runs are not the same campaign on two models."""
    found = differences(baseline, textguided)
    if found:
        raise ValueError(
            f"the two runs are different campaigns and their ΔLoss cannot be compared ({'; '.join(found)}); "
            "compare runs made with the same settings, or pass --force (force=True) to compare them anyway"
        )


def match_layers(baseline: list[str], textguided: list[str]) -> list[tuple[str, str]]:
    """(baseline layer, text-guided layer) pairs: the leading layers by position, then the last two."""
    if not baseline or not textguided:
        raise ValueError("both runs need at least one layer to compare")
    pairs = list(zip(baseline[:-1], textguided[:-1]))
    pairs.append((baseline[-1], textguided[-1]))
    return pairs


def compare_runs(baseline: Any, textguided: Any, *, force: bool = False) -> pd.DataFrame:
    """``metrics.improvement`` of two runs, layers matched by position; both layer names kept.

    Rows: every matched leading layer, then "last layer" (the two classifiers) and "overall" (the
    ΔLoss averaged over all layers of each model, unmatched ones included). Runs of different
    campaigns (see ``differences``) are refused unless ``force``.
    """
    from headstrong.metrics import improvement

    if not force:
        check_comparable(baseline, textguided)
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

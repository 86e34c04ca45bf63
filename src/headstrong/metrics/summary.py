"""``summarize`` (records -> one row per group) and ``improvement`` (baseline vs text-guided)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from headstrong.metrics._functional import DEFAULT_CONFIDENCE, summary_row, z_value

SUMMARY_COLUMNS = ("n", "delta_loss_mean", "delta_loss_ci_low", "delta_loss_ci_high", "delta_loss_median",
                   "mismatch_rate", "mismatch_ci_low", "mismatch_ci_high", "top2_diff_mean", "nonfinite_rate",
                   "delta_loss_std", "n_finite", "n_faults")
RECORD_COLUMNS = ("delta_loss", "golden_pred", "faulty_pred", "top2_diff", "nonfinite")


def summarize(records: Any, by: Sequence[str] | str | None = ("layer",),
              confidence: float = DEFAULT_CONFIDENCE) -> Any:
    """One row per group of ``records`` (one row per evaluated (fault, sample) pair).

    Columns: the ``by`` keys, then n, delta_loss_mean / _ci_low / _ci_high (normal interval,
    z = 2.576 at 99%), delta_loss_median, mismatch_rate / _ci_low / _ci_high (Wilson),
    top2_diff_mean, nonfinite_rate, delta_loss_std, n_finite and n_faults (distinct
    ``fault_id``s when records have them, else n). Groups keep the order in which they first
    appear (forward order for a campaign's layers).

    Records of a stratified campaign carry ``stratum`` and ``weight`` (the stratum's share of the
    uniform population): then every figure is the design-weighted estimate of the same quantity a
    uniform campaign estimates, with intervals that hold under unequal allocation (a t interval
    for the mean, a Wilson interval at the effective sample size for the rate; see
    ``headstrong.faults.strata``), and ``delta_loss_std`` is the design's standard error times
    sqrt(n_finite). Records without them get the plain figures, as before.
    """
    import pandas as pd

    if not isinstance(records, pd.DataFrame):
        records = pd.DataFrame(records)
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(f"records lack columns {missing}; expected {', '.join(RECORD_COLUMNS)}")
    keys = [by] if isinstance(by, str) else list(by or ())
    absent = [k for k in keys if k not in records.columns]
    if absent:
        raise ValueError(f"cannot group by {absent}: records have columns {', '.join(map(str, records.columns))}")

    weighted = "weight" in records.columns or "stratum" in records.columns
    if weighted and not {"weight", "stratum"} <= set(records.columns):
        raise ValueError("records of a stratified campaign need both 'stratum' and 'weight' columns; got one of them")

    def row(group: Any) -> dict[str, float]:
        return summary_row(group["delta_loss"].to_numpy(), (group["golden_pred"] != group["faulty_pred"]).to_numpy(),
                           group["top2_diff"].to_numpy(), group["nonfinite"].to_numpy(), confidence,
                           stratum=group["stratum"].to_numpy() if weighted else None,
                           weight=group["weight"].to_numpy() if weighted else None,
                           n_faults=int(group["fault_id"].nunique()) if "fault_id" in group.columns else None,
                           fault=group["fault_id"].to_numpy() if "fault_id" in group.columns else None)

    if not keys:
        return pd.DataFrame([row(records)], columns=list(SUMMARY_COLUMNS))
    rows = []
    for key, group in records.groupby(keys, sort=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **row(group)})
    return pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])


def _se(frame: Any, confidence: float) -> np.ndarray:
    """Standard error of each row's mean ΔLoss: std / sqrt(n), else from the interval's width."""
    if "delta_loss_std" in frame.columns and "n_finite" in frame.columns:
        return frame["delta_loss_std"].to_numpy(float) / np.sqrt(frame["n_finite"].to_numpy(float))
    width = frame["delta_loss_ci_high"].to_numpy(float) - frame["delta_loss_ci_low"].to_numpy(float)
    return width / (2 * z_value(confidence))


def _ratio_row(label: str, a: float, se_a: float, b: float, se_b: float, z: float) -> dict[str, Any]:
    ratio = a / b if b > 0 else math.nan
    rel = math.sqrt((se_a / a) ** 2 + (se_b / b) ** 2) if a > 0 and b > 0 else math.nan
    return {"layer": label, "baseline_delta_loss": a, "textguided_delta_loss": b, "ratio": ratio,
            "ratio_ci_low": ratio * math.exp(-z * rel), "ratio_ci_high": ratio * math.exp(z * rel)}


def improvement(baseline: Any, textguided: Any, *, last_layer: tuple[str, str] | None = None,
                confidence: float = DEFAULT_CONFIDENCE) -> Any:
    """Per layer ``ΔLoss_baseline / ΔLoss_text-guided`` with an interval, plus two summary rows.

    ``baseline`` / ``textguided``: per-layer summaries (``summarize`` output, or records, which
    are summarised by layer). Layers named alike in both get a row each; "last layer" compares
    the classification layers (the last row of each, or ``last_layer=(baseline_name,
    textguided_name)``); "overall" compares the ΔLoss averaged over all layers of each model.
    The interval is the delta method on the log ratio.
    """
    import pandas as pd

    frames = []
    for frame in (baseline, textguided):
        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(frame)
        if "delta_loss_mean" not in frame.columns:
            frame = summarize(frame, by=("layer",), confidence=confidence)
        if "layer" not in frame.columns or frame.empty:
            raise ValueError("improvement needs per-layer summaries with a 'layer' column and at least one row")
        frame = frame.reset_index(drop=True)
        frame = frame.assign(_se=_se(frame, confidence))
        frames.append(frame)
    base, text = frames
    z = z_value(confidence)
    rows = []
    text_by = text.set_index("layer")
    for _, r in base.iterrows():
        if r["layer"] in text_by.index:
            t = text_by.loc[r["layer"]]
            rows.append(_ratio_row(str(r["layer"]), r["delta_loss_mean"], r["_se"], t["delta_loss_mean"], t["_se"], z))
    if last_layer is None:
        a, b = base.iloc[-1], text.iloc[-1]
    else:
        for frame, name in zip((base, text), last_layer):
            if name not in set(frame["layer"]):
                raise ValueError(f"last layer {name!r} not in the summary; layers: {', '.join(map(str, frame['layer']))}")
        a = base.set_index("layer").loc[last_layer[0]]
        b = text.set_index("layer").loc[last_layer[1]]
    rows.append(_ratio_row("last layer", a["delta_loss_mean"], a["_se"], b["delta_loss_mean"], b["_se"], z))
    means = [f["delta_loss_mean"].to_numpy(float) for f in (base, text)]
    ses = [f["_se"].to_numpy(float) for f in (base, text)]
    rows.append(_ratio_row("overall", float(means[0].mean()), float(np.sqrt((ses[0] ** 2).sum())) / len(ses[0]),
                           float(means[1].mean()), float(np.sqrt((ses[1] ** 2).sum())) / len(ses[1]), z))
    return pd.DataFrame(rows, columns=["layer", "baseline_delta_loss", "textguided_delta_loss", "ratio",
                                       "ratio_ci_low", "ratio_ci_high"])

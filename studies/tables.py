"""The tables of docs/RESULTS.md, from the folders the decisive study wrote (nothing typed by hand).

    .venv/bin/python studies/tables.py runs/decide-cpu-cnn-small runs/decide-cpu-resnet8-w16 > tables.md

Every figure comes from a study's own files: ``paired.csv`` (arms compared seed by seed, each
with its 99% interval and its reading), ``summary.csv`` (each trained head's top-1),
``hardening.csv`` (each hardened model's top-1, parameters, MACs and latency, per seed) and
``timings.csv`` (wall time per stage). Across seeds, a top-1 change and a latency overhead get a
paired t interval (99%) over the per-seed values.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from headstrong.metrics.paired import across_seeds, paired_t
from headstrong.study.seeds import ALL_ZERO

HEADS = ["text", "name", "random", "random-linear", "etf"]
HARDENINGS = ["range", "clip", "fault-aware", "duplicate", "range+duplicate", "fault-aware+range"]
CAMPAIGNS = {"neuron-fp32": "neuron fp32", "neuron-int8": "neuron int8", "weight-last-fp32": "weight fp32 (last layer)"}
RAW = {"neuron-fp32-detector-off": "neuron fp32, detector off", "neuron-int8-detector-off": "neuron int8, detector off"}


def _num(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _cell(row: pd.Series | None, pp: bool = False) -> str:
    """'1.32x [1.10, 1.60] B' where the comparison decides, '... (includes 1)' where it does not."""
    if row is None:
        return "n/a"
    if row.get("method") == ALL_ZERO:  # a duplicated layer corrects all its faults
        if row["estimate"] == 1.0:
            return "both 0 in every seed"
        return f"**{'B' if row['estimate'] > 1 else 'A'} is 0 in every seed**"
    if row["kind"] == "ratio":
        text = f"{_num(row['estimate'])}x [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
        null = 1.0
    else:
        scale = 100.0 if pp else 1.0
        unit = " pp" if pp else ""
        text = (f"{row['estimate'] * scale:+.3g}{unit} [{row['ci_low'] * scale:+.3g}, "
                f"{row['ci_high'] * scale:+.3g}]")
        null = 0.0
    if bool(row["decided"]):
        return f"**{text}**"
    if math.isnan(row["ci_low"]) or math.isnan(row["ci_high"]):
        return text + " (no interval)"
    if row["ci_low"] <= null <= row["ci_high"]:
        return text + f" (includes {null:g})"
    return text + " (t test includes 1)"


def _find(paired: pd.DataFrame, campaign: str, figure: str, a: str, b: str) -> pd.Series | None:
    match = paired[(paired["campaign"] == campaign) & (paired["figure"] == figure) & (paired["a"] == a)
                   & (paired["b"] == b)]
    return None if match.empty else match.iloc[0]


def _table(headings: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + " --- |" * len(headings)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def heads_table(paired: pd.DataFrame, against: str, figure: str, campaigns: dict[str, str]) -> str:
    """Each head (B) against ``against`` (A): the figure per campaign (A is the earlier in the grid)."""
    order = ["baseline", *HEADS]
    rows = []
    for head in [h for h in HEADS if h != against]:
        a, b = sorted((against, head), key=order.index)
        rows.append([head] + [_cell(_find(paired, c, figure, a, b), pp=figure.startswith("mismatch")) for c in campaigns])
    return _table(["head", *campaigns.values()], rows)


def arms_table(paired: pd.DataFrame, pairs: list[tuple[str, str]], figure: str, campaigns: dict[str, str]) -> str:
    rows = []
    for a, b in pairs:
        rows.append([a, b] + [_cell(_find(paired, c, figure, a, b), pp=figure.startswith("mismatch")) for c in campaigns])
    return _table(["A", "B", *campaigns.values()], rows)


def _change(reference: list[float], values: list[float]) -> str:
    """Top-1 change in pp with a 99% paired t interval across seeds; bold where it excludes 0."""
    change = paired_t(reference, values, confidence=0.99)
    text = f"{100 * change.estimate:+.2f} [{100 * change.low:+.2f}, {100 * change.high:+.2f}]"
    if change.decided:
        return f"**{text}**"
    return text + (" (no interval)" if math.isnan(change.low) else " (includes 0)")


def _latency(group: pd.DataFrame) -> str:
    """Across seeds: the mean overhead with a 99% t interval; one seed: that run's 95% interval."""
    if len(group) == 1:
        r = group.iloc[0]
        return (f"{100 * r['latency_overhead']:+.1f} [{100 * r['latency_overhead_low']:+.1f}, "
                f"{100 * r['latency_overhead_high']:+.1f}] (one seed, 95%)")
    spread = across_seeds(list(group["latency_overhead"]), 0.99)
    return f"{100 * spread.mean:+.1f} [{100 * spread.low:+.1f}, {100 * spread.high:+.1f}]"


def cost_table(run: Path) -> str:
    """Top-1 (mean over seeds) and its change against the unhardened baseline of the same seed
    (paired t across seeds, 99%), parameters, MACs and the latency overhead of a 128-image batch
    (the mean over seeds of each seed's median overhead, t interval across seeds)."""
    hardening = _read(run / "hardening.csv")
    first_campaign = hardening["hardening"].str.extract(r"\((.*)\)$")[0].iloc[0]
    hardening = hardening[hardening["hardening"].str.endswith(f"({first_campaign})")].copy()  # a row per cell
    hardening["method"] = hardening["hardening"].str.replace(r" \(.*\)$", "", regex=True)
    summary = _read(run / "summary.csv")  # empty in a study of the baseline head alone
    if summary.empty:
        first = summary
        reference = hardening.groupby(["head", "method"], sort=False)["top1_reference"].apply(list).iloc[0]
        base = pd.Series([v / 100 for v in reference])
    else:
        first = summary[summary["campaign"] == summary["campaign"].iloc[0]]
        base = first.groupby("seed")["baseline_top1"].first()
    timed = {(str(head), str(method)): group for (head, method), group in hardening.groupby(["head", "method"], sort=False)}
    rows = []
    for head in HEADS if not first.empty else []:
        mine = first[first["init"] == head].set_index("seed")
        if mine.empty:
            continue
        seeds = [s for s in base.index if s in mine.index]
        group = timed.get((head, "none"))
        rows.append([head, f"{100 * mine['text_top1'].mean():.2f}",
                     _change([base[s] for s in seeds], [mine.loc[s, "text_top1"] for s in seeds]),
                     f"{100 * (mine['text_params'].iloc[0] / mine['baseline_params'].iloc[0] - 1):+.1f}",
                     f"{100 * (mine['text_macs'].iloc[0] / mine['baseline_macs'].iloc[0] - 1):+.2f}",
                     "-" if group is None else _latency(group)])
    for (head, method), group in timed.items():
        if method == "none":
            continue
        r = group.iloc[0]
        rows.append([f"{head} + {method}", f"{group['top1'].mean():.2f}",
                     _change(list(group["top1_reference"] / 100), list(group["top1"] / 100)),
                     f"{100 * (r['params'] / r['params_reference'] - 1):+.3f}",
                     f"{100 * (r['macs'] / r['macs_reference'] - 1):+.2f}", _latency(group)])
    headings = ["arm", "top-1 (%)", "top-1 change, pp [99%, paired t across seeds]", "parameters +%", "MACs +%",
                "latency +% [99% across seeds]"]
    return (f"baseline top-1 {100 * base.mean():.2f}% (mean over {len(base)} seed{'s' if len(base) != 1 else ''}: "
            f"{', '.join(f'{100 * v:.2f}' for v in base)})\n\n" + _table(headings, rows))


def _read(path: Path) -> pd.DataFrame:
    """A study's CSV; an empty file (no rows of that kind) is an empty table."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def timing_table(run: Path) -> str:
    table = pd.read_csv(run / "timings.csv")
    rows = [[r["stage"], str(int(r["count"])), f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}", str(int(r["attempts"]))]
            for _, r in table.iterrows()]
    return _table(["stage", "count", "wall (s)", "CPU (s)", "attempts"], rows)


def render(run: Path) -> str:
    paired = _read(run / "paired.csv")
    backbone = paired["backbone"].iloc[0]
    seeds = int(paired["seeds"].max())
    out = [f"# {backbone} ({run.name}, {seeds} seed{'s' if seeds != 1 else ''})", ""]
    for against, figure, title in (
            ("baseline", "delta_loss_last", "mean ΔLoss, last layer, A / B"),
            ("baseline", "delta_loss_all", "mean ΔLoss, all layers, A / B"),
            ("baseline", "median_delta_loss_last", "median ΔLoss, last layer, B - A"),
            ("baseline", "mismatch_last", "mismatch, last layer, B - A"),
            ("text", "delta_loss_last", "mean ΔLoss, last layer, A / B"),
            ("text", "mismatch_last", "mismatch, last layer, B - A")):
        who = "heads against the baseline" if against == "baseline" else "the other heads against the text head"
        out += [f"## Q1 {who}: {title}", "", heads_table(paired, against, figure, CAMPAIGNS)]
    alone = [("baseline", f"baseline + {h}") for h in HARDENINGS] + [("baseline", "text")] + \
            [("baseline", f"text + {h}") for h in HARDENINGS]
    combined = [("baseline + range", "baseline + range+duplicate"), ("baseline + duplicate", "baseline + range+duplicate"),
                ("baseline + fault-aware", "baseline + fault-aware+range"), ("baseline + range", "baseline + fault-aware+range"),
                ("text", "text + range"), ("baseline + range", "text + range"), ("text", "text + fault-aware"),
                ("baseline + fault-aware", "text + fault-aware")]
    for figure, title in (("delta_loss_last", "mean ΔLoss, last layer, A / B"), ("delta_loss_all", "mean ΔLoss, all layers, A / B"),
                          ("mismatch_all", "mismatch, mean over layers, B - A"),
                          ("median_delta_loss_last", "median ΔLoss, last layer, B - A")):
        out += [f"## Q2 hardenings against the baseline: {title} (range detector on)", "",
                arms_table(paired, alone, figure, CAMPAIGNS)]
    for figure, title in (("delta_loss_last", "mean ΔLoss, last layer, A / B"), ("mismatch_all", "mismatch, mean over layers, B - A")):
        out += [f"## Q2 hardenings, range detector off: {title}", "", arms_table(paired, alone, figure, RAW)]
    out += ["## Q2 combinations against their parts: mean ΔLoss, last layer, A / B", "",
            arms_table(paired, combined, "delta_loss_last", {**CAMPAIGNS, **RAW})]
    out += ["## Q2 combinations against their parts: mismatch, mean over layers, B - A", "",
            arms_table(paired, combined, "mismatch_all", {**CAMPAIGNS, **RAW})]
    out += ["## Q3 cost", "", cost_table(run)]
    out += ["## Wall time per stage", "", timing_table(run)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="study folders (each holds paired.csv, summary.csv, ...)")
    args = parser.parse_args(argv)
    for run in args.runs:
        missing = [n for n in ("paired.csv", "summary.csv", "hardening.csv", "timings.csv") if not (run / n).is_file()]
        if missing:
            print(f"error: {run} is not a finished study folder (missing {', '.join(missing)})", file=sys.stderr)
            return 2
    print("\n\n".join(render(run) for run in args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tables of campaign results: rich tables for the terminal, Markdown and HTML for reports.

Every table is laid out to fit a 100-column terminal: the key column (the layer) is never cut,
intervals sit beside their estimate, units are in the headings, and shares are percentages
throughout (never a fraction in one column and a percentage in the next).
"""

from __future__ import annotations

import html
import math
import re
import textwrap
from typing import Any, Sequence

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

TERMINAL_WIDTH = 100  # what printed tables are laid out for, and the width used when not a terminal

# (column, heading) shown for a per-layer summary
LAYER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("layer", "layer"),
    ("n", "n"),
    ("delta_loss", "ΔLoss\n± 99% CI"),
    ("delta_loss_median", "ΔLoss\nmedian"),
    ("mismatch", "mismatch %\n[99% CI]"),
    ("top2_diff_mean", "top-2\ndiff pp"),
    ("nonfinite_rate", "Inf/NaN\n%"),
)  # a "\n" breaks a heading in the terminal; HTML and Markdown show a space


LEGEND = (
    "n: (fault, image) pairs evaluated. ΔLoss: |CE(faulty) − CE(golden)| in nats, mean ± its 99% interval, "
    "and the median. mismatch: % of faulty predictions that differ from the golden prediction (silent data "
    "corruption), with its 99% Wilson interval. top-2 diff: the golden model's softmax margin p1 − p2 in "
    "percentage points (pp), a property of the images, not of the faults. Inf/NaN: % of faulty outputs "
    "that are not finite."
)

WRAPPED_NAMES = {
    "backbone.": "backbone.NAME is layer NAME of the torchvision/timm model that headstrong wraps",
    "head": "head is the classification layer (torchvision's fc, timm's head or classifier)",
    "projection": "projection is the text-guided model's Linear from the backbone's features to the text width",
}


def images_note(only_correct: bool) -> str:
    """Which images the figures are over, in words."""
    if only_correct:
        return "Images: those the campaign's golden model classifies correctly (only_correct)."
    return "Images: all evaluated images, including those the golden model gets wrong (only_correct off)."


def fmt_number(value: object, digits: int = 3) -> str:
    """Short text for a number: ``digits`` significant digits, scientific (1.76e-4) when very small or large."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}"
    number = float(value)  # type: ignore[arg-type]
    if number == 0:
        return "0"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if abs(number) >= 1e4 or abs(number) < 1e-3:
        return re.sub(r"e([+-])0(\d)", r"e\1\2", f"{number:.{digits - 1}e}")  # 1.76e-4, not 1.76e-04
    return f"{number:.{digits}g}"


def fmt_percent(share: object, digits: int = 3) -> str:
    """A share in [0, 1] as a percentage without the sign: 0.0625 -> '6.25', 1e-7 -> '<0.001'."""
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "–"
    value = float(share) * 100  # type: ignore[arg-type]
    if value == 0:
        return "0"
    if 0 < value < 1e-3:
        return "<0.001"
    if value >= 99.95 and value < 100:
        return ">99.9"
    return f"{value:.{digits}g}" if value < 100 else f"{value:.0f}"


def fmt_interval(low: object, high: object, percent: bool = False) -> str:
    """'[low, high]' with two significant digits (an interval's bounds need no more)."""
    text = fmt_percent if percent else fmt_number
    return f"[{text(low, 2)}, {text(high, 2)}]"


def fmt_mean_ci(mean: float, low: float, high: float) -> str:
    """'mean ± half-width' for a symmetric interval, else 'mean [low, high]'."""
    if any(math.isnan(float(v)) for v in (mean, low, high)):
        return fmt_number(mean)
    half = (float(high) - float(low)) / 2
    if math.isclose(float(mean) - float(low), half, rel_tol=1e-6, abs_tol=1e-12):
        return f"{fmt_number(mean)} ± {fmt_number(half, 2)}"
    return f"{fmt_number(mean)} {fmt_interval(low, high)}"


def shared_prefix(names: Sequence[str]) -> str:
    """The first dotted part ("backbone.") that at least half of the names, and two or more, start with.

    Plots drop it from tick labels (and say so); names without it (head, projection) keep theirs.
    """
    firsts = [n.split(".", 1)[0] + "." for n in names if "." in n]
    if not firsts:
        return ""
    best = max(set(firsts), key=firsts.count)
    return best if firsts.count(best) >= max(2, len(names) / 2) else ""


def drop_prefix(name: str, prefix: str) -> str:
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def layer_names_note(names: Sequence[str]) -> str:
    """What the wrapper's layer names mean (backbone. prefix, head, projection), for those present; else ''."""
    present = [text for key, text in WRAPPED_NAMES.items()
               if (key.endswith(".") and any(n.startswith(key) for n in names)) or key in names]
    return f"Layer names: {'; '.join(present)}." if present else ""


def layer_rows(per_layer: pd.DataFrame) -> list[list[str]]:
    """One row of text cells per layer, in the order of LAYER_COLUMNS."""
    rows = []
    for row in per_layer.to_dict("records"):
        cells = {
            "layer": str(row["layer"]),
            "n": fmt_number(int(row["n"])),
            "delta_loss": fmt_mean_ci(row["delta_loss_mean"], row["delta_loss_ci_low"], row["delta_loss_ci_high"]),
            "delta_loss_median": fmt_number(row["delta_loss_median"]),
            "mismatch": f"{fmt_percent(row['mismatch_rate'])} "
                        f"{fmt_interval(row['mismatch_ci_low'], row['mismatch_ci_high'], percent=True)}",
            "top2_diff_mean": f"{float(row['top2_diff_mean']):.1f}",
            "nonfinite_rate": fmt_percent(row["nonfinite_rate"]),
        }
        rows.append([cells[key] for key, _ in LAYER_COLUMNS])
    return rows


def rich_table(headings: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None,
               caption: str | None = None, key: int = 0) -> Table:
    """A compact table: the key column (the first unless told) is never wrapped or cut; others may wrap.

    A heading wider than its column's cells is broken over lines, so headings never widen a table.
    """
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0),
                  caption_justify="left")
    for i, heading in enumerate(headings):
        cells = max([len(str(r[i])) for r in rows] or [0])
        if i == key:
            table.add_column(heading, justify="left", no_wrap=True, min_width=max(cells, len(str(heading))))
        else:
            text = str(heading)
            if "\n" not in text:
                text = textwrap.fill(text, width=max(cells, *map(len, text.split())))
            table.add_column(text, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def console() -> Console:
    """A rich console for tables: the terminal's width, or TERMINAL_WIDTH when piped to a file."""
    out = Console()
    return out if out.is_terminal else Console(width=TERMINAL_WIDTH)


def layer_table(per_layer: pd.DataFrame, title: str | None = None, only_correct: bool | None = None) -> Table:
    """The per-layer summary as a rich table, full layer names (what --layers takes), legend below."""
    names = [str(n) for n in per_layer["layer"]]
    notes = [LEGEND]
    if only_correct is not None:
        notes.append(images_note(only_correct))
    notes.append(layer_names_note(names))
    return rich_table([h for _, h in LAYER_COLUMNS], layer_rows(per_layer), title,
                      caption=" ".join(n for n in notes if n))


def improvement_words(ratio: float, low: float, high: float) -> str:
    """What an improvement with this interval says, in a few words; an interval including 1 says so."""
    if any(math.isnan(float(v)) for v in (ratio, low, high)):
        return "no estimate"
    if low > 1:
        return "text-guided better"
    if high < 1:
        return "baseline better"
    return "CI includes 1"


def fmt_ratio(ratio: float, low: float, high: float) -> str:
    """'1.81x [0.59, 5.55]'."""
    if math.isnan(float(ratio)):
        return "–"
    return f"{ratio:.3g}x [{low:.3g}, {high:.3g}]"


COMPARISON_HEADINGS = ("layer", "ΔLoss\nbaseline", "ΔLoss\ntext-guided", "improvement\n[99% CI]", "reading")
COMPARISON_LEGEND = (
    "improvement = baseline ΔLoss / text-guided ΔLoss, with its 99% interval: above 1x the text-guided model is "
    "more resilient. reading: the interval lies above 1 (text-guided better), below 1 (baseline better) or "
    "includes 1 (no clear difference). Layers are matched by position; 'overall' compares the ΔLoss averaged "
    "over all layers; ΔLoss in nats."
)


def comparison_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headings and cells of an improvement table (``report.compare.compare_runs``): each layer once.

    A layer row names the layer once when both models call it alike, else "baseline / text-guided";
    the ratio carries its 99% interval and what the interval says in words.
    """
    rows = []
    for row in table.to_dict("records"):
        key = str(row["layer"])
        a, b = str(row.get("baseline_layer", "")), str(row.get("textguided_layer", ""))
        if key == "last layer" and a:
            key = f"last layer ({a})" if a == b else f"last layer ({a} / {b})"
        rows.append([
            key, fmt_number(row["baseline_delta_loss"]), fmt_number(row["textguided_delta_loss"]),
            fmt_ratio(row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"]),
            improvement_words(row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"]),
        ])
    return list(COMPARISON_HEADINGS), rows


def headline(table: pd.DataFrame, row: str = "last layer") -> str:
    """One sentence for a row of an improvement table: the ratio, its interval and what it says."""
    found = table[table["layer"] == row]
    if found.empty:
        raise ValueError(f"no {row!r} row in the improvement table; rows: {', '.join(map(str, table['layer']))}")
    r = found.iloc[0]
    ratio, low, high = float(r["ratio"]), float(r["ratio_ci_low"]), float(r["ratio_ci_high"])
    if any(math.isnan(v) for v in (ratio, low, high)):
        words = "no estimate (a ΔLoss of 0)"
    elif low > 1:
        words = "the text-guided model is more resilient (the interval lies above 1)"
    elif high < 1:
        words = "the baseline is more resilient (the interval lies below 1)"
    else:
        words = "the interval includes 1: no clear difference between the two models"
    return f"{row}: improvement {fmt_ratio(ratio, low, high)} (99% CI); {words}"


def markdown(headings: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in headings) + " |", "|" + " --- |" * len(headings)]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(headings: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h)).replace(chr(10), '<br>')}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


RANK_KEYS = {"mismatch": ("mismatch_rate", "delta_loss_mean"), "delta-loss": ("delta_loss_mean", "mismatch_rate")}


def rank_layers(per_layer: pd.DataFrame, by: str = "mismatch") -> pd.DataFrame:
    """Layers from most to least vulnerable: by mismatch rate (SDC), ties by mean ΔLoss, or the reverse.

    Adds a 1-based ``rank`` column first; the layer's forward position is kept in ``layer_pos``.
    """
    if by not in RANK_KEYS:
        raise ValueError(f"unknown ranking {by!r}; expected one of {', '.join(RANK_KEYS)}")
    ranked = per_layer.sort_values(list(RANK_KEYS[by]), ascending=False, kind="stable").reset_index(drop=True)
    return ranked.assign(rank=range(1, len(ranked) + 1))[["rank", *per_layer.columns]]


def rank_rows(per_layer: pd.DataFrame, by: str = "mismatch") -> tuple[list[str], list[list[str]]]:
    """Headings and cells of ``rank_layers``: rank, layer, then the per-layer columns but top-2 diff
    (the golden margin says nothing about a layer's vulnerability)."""
    ranked = rank_layers(per_layer, by)
    keep = [i for i, (key, _) in enumerate(LAYER_COLUMNS) if key != "top2_diff_mean"]
    headings = ["#", *(LAYER_COLUMNS[i][1] for i in keep)]
    return headings, [[str(r), *(cells[i] for i in keep)] for r, cells in zip(ranked["rank"], layer_rows(ranked))]


def write_tables(run: Any) -> list[Any]:
    """Write ``per_layer.csv`` and ``per_bit.csv`` beside a run's Parquet records; returns the paths.

    Full-precision numbers, one row per layer (forward order, with its vulnerability ``rank`` by
    mismatch rate) and per (layer, bit): what a spreadsheet or another tool reads without Parquet.
    """
    from pathlib import Path

    from headstrong._atomic import atomic_write

    if getattr(run, "out", None) is None:
        raise ValueError("this result has no folder (run with out=None); give out= to keep its tables")
    out = Path(run.out)
    ranks = rank_layers(run.per_layer).set_index("layer")["rank"]
    per_layer = run.per_layer.assign(vulnerability_rank=run.per_layer["layer"].map(ranks).astype("int64"))
    written = []
    for name, frame in (("per_layer.csv", per_layer), ("per_bit.csv", run.per_bit)):
        written.append(atomic_write(out / name, lambda tmp, frame=frame: frame.to_csv(tmp, index=False)))
    return written

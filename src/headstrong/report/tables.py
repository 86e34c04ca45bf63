"""Tables of campaign results: rich tables for the terminal, Markdown and HTML for reports."""

from __future__ import annotations

import html
import math
from typing import Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

# (column, heading) shown for a per-layer summary
LAYER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("layer", "layer"),
    ("n", "n"),
    ("delta_loss_mean", "ΔLoss mean"),
    ("delta_loss_ci", "99% CI"),
    ("delta_loss_median", "median"),
    ("mismatch_rate", "mismatch"),
    ("mismatch_ci", "99% CI"),
    ("top2_diff_mean", "top-2"),
    ("nonfinite_rate", "non-finite"),
)


def fmt_number(value: object) -> str:
    """Short text for a number: 3 significant digits, scientific when very small or large."""
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
        return f"{number:.2e}"
    return f"{number:.3g}"


def layer_rows(per_layer: pd.DataFrame) -> list[list[str]]:
    """One row of text cells per layer, in the order of LAYER_COLUMNS."""
    rows = []
    for row in per_layer.to_dict("records"):
        cells = {
            "layer": str(row["layer"]),
            "n": fmt_number(int(row["n"])),
            "delta_loss_mean": fmt_number(row["delta_loss_mean"]),
            "delta_loss_ci": f"[{fmt_number(row['delta_loss_ci_low'])}, {fmt_number(row['delta_loss_ci_high'])}]",
            "delta_loss_median": fmt_number(row["delta_loss_median"]),
            "mismatch_rate": fmt_number(row["mismatch_rate"]),
            "mismatch_ci": f"[{fmt_number(row['mismatch_ci_low'])}, {fmt_number(row['mismatch_ci_high'])}]",
            "top2_diff_mean": fmt_number(row["top2_diff_mean"]),
            "nonfinite_rate": fmt_number(row["nonfinite_rate"]),
        }
        rows.append([cells[key] for key, _ in LAYER_COLUMNS])
    return rows


def rich_table(headings: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for i, heading in enumerate(headings):
        table.add_column(heading, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def console() -> Console:
    """A rich console for tables: the terminal's width, or wide enough when piped to a file."""
    out = Console()
    return out if out.is_terminal else Console(width=200)


def layer_table(per_layer: pd.DataFrame, title: str | None = None) -> Table:
    """The per-layer summary as a rich table."""
    return rich_table([h for _, h in LAYER_COLUMNS], layer_rows(per_layer), title)


def markdown(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in headings) + " |", "|" + " --- |" * len(headings)]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

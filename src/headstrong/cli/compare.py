"""``headstrong compare A B``: how much more resilient run B (text-guided) is than run A (baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def comparison_rows(table: "object") -> tuple[list[str], list[list[str]]]:
    """Headings and text cells of an improvement table, numbers shortened."""
    from headstrong.report.tables import fmt_number

    frame = table  # a pandas DataFrame
    headings = [str(c) for c in frame.columns]  # type: ignore[attr-defined]
    rows = [[fmt_number(v) if isinstance(v, float) else str(v) for v in row]
            for row in frame.itertuples(index=False)]  # type: ignore[attr-defined]
    return headings, rows


def compare(
    baseline: Path = typer.Argument(..., help="Run folder of the baseline model."),
    textguided: Path = typer.Argument(..., help="Run folder of the text-guided model."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the table to this CSV file."),
) -> None:
    """Improvement (baseline ΔLoss / text-guided ΔLoss) per layer, in the last layer and overall."""
    from headstrong.campaign import load_results
    from headstrong.report.compare import compare_runs
    from headstrong.report.tables import console, rich_table

    if csv is not None and csv.is_dir():
        raise ValueError(f"--csv {str(csv)!r} is a directory; give a file name")
    table = compare_runs(load_results(baseline), load_results(textguided))
    headings, rows = comparison_rows(table)
    console().print(rich_table(headings, rows, title=f"improvement of {textguided} over {baseline}"))
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        typer.echo(f"wrote {csv}")


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to the ``headstrong`` app."""
    app.command("compare")(compare)

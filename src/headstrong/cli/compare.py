"""``headstrong compare A B``: how much more resilient run B (text-guided) is than run A (baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def compare(
    baseline: Path = typer.Argument(..., help="Run folder of the baseline model."),
    textguided: Path = typer.Argument(..., help="Run folder of the text-guided model."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the table to this CSV file."),
    force: bool = typer.Option(
        False, "--force", help="Compare runs that differ in kind, format, fault model, bits or layers anyway."
    ),
) -> None:
    """Improvement (baseline ΔLoss / text-guided ΔLoss) per layer, in the last layer and overall.

    Runs of different campaigns (kind, format, fault model, bits, range detector, layers) are
    refused unless --force, with what differs named.
    """
    from headstrong.campaign import load_results
    from headstrong.report.compare import compare_runs, differences
    from headstrong.report.tables import (
        COMPARISON_LEGEND,
        comparison_rows,
        console,
        headline,
        layer_names_note,
        rich_table,
    )

    if csv is not None and csv.is_dir():
        raise ValueError(f"--csv {str(csv)!r} is a directory; give a file name")
    runs = load_results(baseline), load_results(textguided)
    table = compare_runs(*runs, force=force)
    headings, rows = comparison_rows(table)
    names = [str(n) for run in runs for n in run.per_layer["layer"]]
    caption = " ".join(n for n in (COMPARISON_LEGEND, layer_names_note(names)) if n)
    out = console()
    out.print(rich_table(headings, rows, title=f"improvement of {textguided} over {baseline}", caption=caption))
    for row in ("last layer", "overall"):
        out.print(headline(table, row), soft_wrap=False)
    if force and differences(*runs):
        typer.echo(f"warning: compared different campaigns (--force): {'; '.join(differences(*runs))}", err=True)
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        typer.echo(f"wrote {csv}")


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to the ``headstrong`` app."""
    app.command("compare")(compare)

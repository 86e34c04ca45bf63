"""``headstrong report RUN...``: a self-contained HTML page, PNG plots and a Markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    runs: List[Path] = typer.Argument(..., help="Run folders; with two, the first is the baseline."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.html, summary.md and the PNGs."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Names of the runs, separated by commas."),
    rank: bool = typer.Option(False, "--rank", help="Print each run's layers from most to least vulnerable."),
    by: str = typer.Option("mismatch", "--by", help="What --rank sorts by: mismatch (SDC rate) or delta-loss."),
) -> None:
    """Plot and tabulate campaign results: ΔLoss per layer, mismatch per bit, runs side by side.

    With two runs of the same campaign, the report opens with the improvement of the second over
    the first; two different campaigns are shown side by side without one.
    """
    from headstrong.campaign import load_results
    from headstrong.report import build_report
    from headstrong.report.compare import compare_runs, differences

    if out is None and not rank:
        raise ValueError("give --out FOLDER for the report, or --rank to print the layers by vulnerability")
    from headstrong.report.checks import result_warnings

    names = [n.strip() for n in labels.split(",")] if labels else None
    results = [load_results(run) for run in runs]
    for path, result in zip(runs, results):
        for warning in result_warnings(result):
            typer.echo(f"warning ({path}): {warning}", err=True)
    if rank:
        _print_ranking(results, names or [str(r) for r in runs], by)
    if out is None:
        return
    comparison = None
    if len(results) == 2:
        found = differences(*results)
        if found:
            typer.echo(f"note: no improvement table: the two runs are different campaigns ({'; '.join(found)})",
                       err=True)
        else:
            comparison = compare_runs(*results)
    page = build_report(results, out, names, comparison=comparison)
    typer.echo(f"wrote {page} (and summary.md, PNG plots) in {out}")


def _print_ranking(results: list, labels: list[str], by: str) -> None:  # noqa: ANN001
    from headstrong.report.tables import LEGEND, console, layer_names_note, rank_rows, rich_table

    if len(labels) != len(results):
        raise ValueError(f"got {len(labels)} labels for {len(results)} runs; give one label per run")
    order = "mismatch rate (SDC), ties by mean ΔLoss" if by == "mismatch" else "mean ΔLoss, ties by mismatch rate"
    screen = console()
    for label, result in zip(labels, results):
        headings, rows = rank_rows(result.per_layer, by)
        names = [row[1] for row in rows]
        caption = " ".join(n for n in (LEGEND, layer_names_note(names)) if n)
        screen.print(rich_table(headings, rows, title=f"{label}: layers from most to least vulnerable, by {order}",
                                caption=caption, key=1))


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to the ``headstrong`` app."""
    app.command("report")(report)

"""``headstrong report RUN...``: a self-contained HTML page, PNG plots and a Markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    runs: List[Path] = typer.Argument(..., help="Run folders; with two, the first is the baseline."),
    out: Path = typer.Option(..., "--out", help="Folder for report.html, summary.md and the PNGs."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Names of the runs, separated by commas."),
) -> None:
    """Plot and tabulate campaign results: ΔLoss per layer, mismatch per bit, runs side by side."""
    from headstrong.campaign import load_results
    from headstrong.report import build_report
    from headstrong.report.compare import compare_runs

    names = [n.strip() for n in labels.split(",")] if labels else None
    results = [load_results(run) for run in runs]
    comparison = compare_runs(results[0], results[1]) if len(results) == 2 else None
    page = build_report(results, out, names, comparison=comparison)
    typer.echo(f"wrote {page} (and summary.md, PNG plots) in {out}")


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to the ``headstrong`` app."""
    app.command("report")(report)

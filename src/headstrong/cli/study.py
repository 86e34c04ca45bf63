"""``headstrong demo`` and ``headstrong study``: the whole pipeline, resumable, one report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from headstrong.cli._options import device_option, progress_option, setup_compute, threads_option


def _print_result(result) -> None:
    from headstrong.report.tables import COMPARISON_LEGEND, console as table_console, rich_table
    from headstrong.study.summary import aggregate, cost_rows, transposed_tables

    console = table_console()
    for title, headings, rows in transposed_tables(aggregate(result.summary, result.paired)):
        console.print(rich_table(headings, rows, title=title))
    console.print(COMPARISON_LEGEND + " top-2 diff: the golden model's softmax margin in percentage points (pp); "
                  "mismatch: % of faulty predictions that differ from the golden one.")
    cost_headings, cost = cost_rows(result.cells)
    console.print(rich_table(cost_headings, cost, title="Cost"))
    if result.paired is not None and not result.paired.empty:
        from headstrong.study.seeds import decided_summary

        line, headings, rows = decided_summary(result.paired)
        if rows:
            several = int(result.paired["seeds"].max()) > 1
            title = "Decided comparisons (B against A)" + (", across seeds" if several else ", one seed")
            console.print(rich_table(headings, rows, title=title))
        console.print(line)
    console.print(f"Report: [bold]{result.report}[/]  (summary: {Path(result.report).with_name('summary.md')})")


def _run(config, progress: bool) -> None:
    from rich.console import Console

    from headstrong.study import run_study

    console = Console()
    result = run_study(config, progress=progress, say=console.print)
    _print_result(result)


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: str = typer.Option("runs/demo", help="Folder for models, campaigns and the report (rerun resumes)."),
        device: str = device_option(),
        backbone: str = typer.Option("cnn-small", help="Backbone for both models (built-in, torchvision or timm)."),
        formats: str = typer.Option("fp32,bf16", help="Comma-separated number formats of the neuron campaigns."),
        small_input: bool = typer.Option(False, help="CIFAR-style stem for ResNets (3x3, stride 1, no max-pool)."),
        epochs: Optional[int] = typer.Option(None, help="Training epochs (default 3)."),
        limit_train: Optional[int] = typer.Option(None, help="Training images (default 20000; 0 = all)."),
        n_faults: Optional[int] = typer.Option(None, help="Neuron faults per layer, uniform (default: stratified, "
                                               "each layer sized by --margin)."),
        margin: Optional[float] = typer.Option(None, help="Half-width of each layer's 99% interval on the mismatch "
                                               "rate (default 0.005: ±0.5 pp)."),
        max_images: Optional[int] = typer.Option(None, help="Test images the faults are applied to (default 256)."),
        threads: Optional[int] = threads_option(),
        progress: bool = progress_option(),
    ) -> None:
        """Train a baseline and a text-guided model on Fashion-MNIST, inject faults, write the report."""
        device = setup_compute(device, threads)
        from headstrong.study import demo_config

        train: dict = {"small_input": small_input} if small_input else {}
        if epochs is not None:
            train["epochs"] = epochs
        if limit_train is not None:
            train["limit_train"] = limit_train or None
        campaign = {k: v for k, v in (("n_faults", n_faults), ("margin", margin), ("max_images", max_images))
                    if v is not None}
        config = demo_config(out=out, device=device, backbone=backbone,
                             formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
                             train=train, campaign=campaign)
        _run(config, progress)

    @app.command()
    def study(
        config_file: Path = typer.Argument(..., help="Study config (TOML), e.g. studies/fashion_mnist.toml."),
        threads: Optional[int] = threads_option(),
        progress: bool = progress_option(),
    ) -> None:
        """Run a grid of backbones x inits x formats x seeds; resumable; one combined report."""
        from headstrong._device import set_threads
        from headstrong.study import load_study

        set_threads(threads)
        config = load_study(config_file)
        setup_compute(config.device)  # the config's own device: a GPU this machine lacks is refused here
        _run(config, progress)

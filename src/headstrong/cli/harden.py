"""``headstrong harden``: harden a trained checkpoint (range, clip, duplicate, fault-aware)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from headstrong.cli._options import threads_option


def register(app: typer.Typer) -> None:
    app.command("harden")(harden_command)


def harden_command(
    model: Path = typer.Argument(..., help="A checkpoint written by headstrong train (or by harden)."),
    method: str = typer.Option(..., "--method", help="range, clip, duplicate, fault-aware, or a combination: range+duplicate."),
    out: Path = typer.Option(..., "--out", help="Folder for the hardened model.pt and summary.json."),
    bounds: str = typer.Option("max", help="range/clip: max (profiled min/max) or a quantile such as q0.999."),
    where: str = typer.Option("activations", help="range/clip: activations (after every activation function), layers (after every injectable layer) or activations+logits."),
    per_channel: bool = typer.Option(False, help="range/clip: one bound per channel."),
    layers: Optional[str] = typer.Option(None, help="duplicate: comma-separated layer names (default: the classification layer)."),
    redundancy: str = typer.Option("dmr", help="duplicate: dmr (compare, recompute) or tmr (vote)."),
    top: Optional[int] = typer.Option(None, help="duplicate: the k most vulnerable layers of --ranking."),
    ranking: Optional[Path] = typer.Option(None, help="duplicate --top: a campaign folder (headstrong inject --out)."),
    separate_weights: bool = typer.Option(False, help="duplicate: each copy holds its own weights."),
    fmt: str = typer.Option("fp32", "--format", help="fault-aware: number format of the flips."),
    kind: str = typer.Option("neuron", help="fault-aware: neuron, weight or both."),
    rate: Optional[float] = typer.Option(None, help="fault-aware: bit-error rate in [0, 1] (instead of --flips)."),
    flips: int = typer.Option(64, help="fault-aware: bits flipped per batch."),
    epochs: int = typer.Option(1, help="fault-aware: epochs."),
    lr: float = typer.Option(0.01, help="fault-aware: peak learning rate."),
    limit_train: Optional[int] = typer.Option(None, help="fault-aware: training images per epoch (default all)."),
    dataset: Optional[str] = typer.Option(None, help="Data set (default: the checkpoint's)."),
    profile_images: int = typer.Option(2000, help="Training images the bounds are profiled on."),
    test_images: int = typer.Option(2000, help="Test images for accuracy before and after."),
    threads: Optional[int] = threads_option(),
) -> None:
    """Harden a checkpoint; write the hardened checkpoint and a summary (bounds, accuracy before/after)."""
    from rich.console import Console

    from headstrong._device import set_threads
    from headstrong.harden import HardenOptions
    from headstrong.harden.run import harden_checkpoint
    from headstrong.report.tables import rich_table

    set_threads(threads)
    options = HardenOptions(
        bounds=bounds, where=where, per_channel=per_channel,
        layers=tuple(n.strip() for n in layers.split(",") if n.strip()) if layers else None,
        redundancy=redundancy, top=top, separate_weights=separate_weights, fmt=fmt, kind=kind, rate=rate,
        flips=flips, epochs=epochs, lr=lr, limit_train=limit_train,
    )
    summary = harden_checkpoint(model, method, out, options, dataset=dataset, profile_images=profile_images,
                                test_images=test_images, ranking=ranking)
    console = Console()
    if summary.bounds:
        rows = [[b["site"], b["mode"], f"{b['low']:.4g}", f"{b['high']:.4g}", str(b["channels"] or "all")]
                for b in summary.bounds]
        console.print(rich_table(["site", "mode", "low", "high", "channels"], rows, title="Bounds"))
    for step in summary.steps:
        shown = {k: v for k, v in step.items() if k not in ("sites", "method")}
        console.print(f"[bold]{step['method']}[/] {shown}")
    console.print(
        f"top-1 on {summary.test_images} {summary.dataset} test images: {summary.top1_before:.2f}% -> "
        f"{summary.top1_after:.2f}% ({_change_words(summary.top1_change_pp)}); parameters "
        f"{summary.params_before:,} -> {summary.params_after:,}; MACs per image {summary.macs_before:,} -> {summary.macs_after:,}"
    )
    console.print(f"Hardened checkpoint: [bold]{summary.checkpoint}[/] (summary: {summary.checkpoint.with_name('summary.json')})")


def _change_words(change: tuple[float, float, float]) -> str:
    """'-0.40 pp, 95% paired interval [-0.71, -0.09]', and in words when it includes no change."""
    value, low, high = change
    text = f"{value:+.2f} pp, 95% paired interval [{low:+.2f}, {high:+.2f}]"
    return text + ("; includes 0: no clear change" if low <= 0 <= high else "")

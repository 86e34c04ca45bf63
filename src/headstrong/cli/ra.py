"""``headstrong ra``: Resiliency Accuracy of a checkpoint on an accelerator, by several estimators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from headstrong._lock import hold_folder
from headstrong.cli._options import check_out_folder, device_option, progress_option, setup_compute, threads_option

# Exact RA runs every site; above this many it needs --force. docs/BENCHMARKS.md measured
# LeNet-5's 1,128,832 sites in 1,041 s (about 1,100 sites/s on one CPU, 50 images) and a tiny
# CNN's 23,152 in 10 s: the limit is about 4 minutes at LeNet-5's rate.
EXACT_MAX_SITES = 250_000
EXACT_SITES_PER_S = 1_100


def register(app: typer.Typer) -> None:
    """Add the ``ra`` command to ``app``."""
    app.command("ra")(ra_command)


def ra_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `headstrong train`."),
    accelerator: str = typer.Option(
        "systolic-32x32-os", "--accelerator", "-a", help="A preset (systolic-32x32-os, nvdla) or a TOML file."
    ),
    estimator: str = typer.Option(
        "uniform,mac,is,is-b", "--estimator", "-e", help="Comma-separated: uniform, mac, is, is-b, exact."
    ),
    samples: int = typer.Option(1000, "--samples", "-n", help="Faults drawn per estimator."),
    fmt: str = typer.Option("fp16", "--fmt", help="Number format the accelerator holds tensors in."),
    dataset: Optional[str] = typer.Option(None, help="Evaluation data set (default: the checkpoint's)."),
    max_images: int = typer.Option(200, "--max-images", help="Size of the fixed evaluation set."),
    pilot: Optional[int] = typer.Option(None, help="is-b pilot faults (default 16 per bit)."),
    pilot_images: int = typer.Option(25, "--pilot-images", help="Images each is-b pilot fault runs on."),
    seed: int = typer.Option(0, help="Seed of the draws and of the evaluation subset."),
    range_detector: bool = typer.Option(False, help="Clamp flipped activations (GoldenEye's detector)."),
    threads: Optional[int] = threads_option(),
    device: str = device_option(),
    force: bool = typer.Option(False, "--force", help="Run --estimator exact even on a model too large to enumerate quickly."),
    progress: bool = progress_option(),
    out: Path = typer.Option(Path("runs/ra"), help="Folder for results.json and convergence.png."),
) -> None:
    """Estimate the accuracy given one transient fault in the accelerator (Thales, HPCA 2023)."""
    from rich.console import Console

    console = Console()
    from headstrong.ra import Accelerator

    names = _parse_estimators(estimator)
    if samples < 1:
        raise ValueError(f"--samples {samples}: must be >= 1")
    if pilot_images < 1:
        raise ValueError(f"--pilot-images {pilot_images}: must be >= 1")
    device = setup_compute(device, threads)
    check_out_folder(out)
    with hold_folder(out, "ra"):  # one run per folder: results.json and the plot from the same run
        hardware = Accelerator.load(accelerator)
        estimates, oracle, exact = _run(checkpoint, hardware, names, samples, fmt, dataset, max_images,
                                        {"pilot": pilot, "pilot_images": pilot_images}, seed, range_detector, console,
                                        device=device, force=force, show=progress)
        console.print(_table(estimates, oracle, exact))
        out.mkdir(parents=True, exist_ok=True)
        from headstrong.ra.plot import convergence_plot

        sampled = {k: v for k, v in estimates.items() if k != "exact"}
        if sampled:
            figure = convergence_plot(sampled, out / "convergence.png", exact=exact)
            console.print(f"convergence plot: {figure}")
        results = {
            "checkpoint": str(checkpoint), "accelerator": oracle.space.accelerator.to_dict(), "fmt": fmt,
            "images": len(oracle.x), "sa": oracle.sa, "distinct_sites_evaluated": oracle.evaluated,
            "estimates": {
                k: {"ra": e.ra, "ci": list(e.ci), "software": e.software, "software_ci": list(e.software_ci),
                    "samples": e.samples, "std": e.std, "pilot": e.pilot,
                    "pilot_cost": e.pilot_cost}
                for k, e in estimates.items()
            },
        }
        (out / "results.json").write_text(json.dumps(results, indent=2))
        console.print(f"results: {out / 'results.json'}")


def _parse_estimators(text: str) -> list[str]:
    from headstrong.ra.estimators import list_estimators

    names = [n.strip() for n in text.split(",") if n.strip()]
    known = list_estimators()
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(f"unknown estimator {bad[0] if bad else text!r}; expected a comma-separated list of {', '.join(known)}")
    return list(dict.fromkeys(names))


def _check_exact_size(model, data, accelerator, fmt: str, force: bool) -> None:  # noqa: ANN001
    """Refuse an exact enumeration that would run for hours, saying how large it is."""
    from headstrong import formats
    from headstrong.ra.sites import SiteSpace

    sites = SiteSpace(model, accelerator, tuple(data[0][0].shape), formats.get(fmt).bits).size
    if sites > EXACT_MAX_SITES and not force:
        raise ValueError(
            f"--estimator exact would enumerate {sites:,} fault sites (about {sites / EXACT_SITES_PER_S / 60:,.0f} min "
            f"at {EXACT_SITES_PER_S:,} sites/s), above the {EXACT_MAX_SITES:,} allowed without --force; "
            "use a sampled estimator (is-b) or add --force"
        )


def _run(checkpoint, accelerator, names, samples, fmt, dataset, max_images, pilot_params, seed, range_detector, console,  # noqa: ANN001, ANN202
         *, device="cpu", force=False, show=True):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from headstrong.data import load_dataset
    from headstrong.ra.api import make_oracle
    from headstrong.ra.estimators import get
    from headstrong.train import load_checkpoint

    model, config = load_checkpoint(checkpoint)
    config = config or {}
    data = load_dataset(dataset or config.get("dataset", "fashion-mnist"), split="test",
                        image_size=config.get("image_size"), limit=max_images, seed=seed)
    if "exact" in names:
        _check_exact_size(model, data, accelerator, fmt, force)
    oracle = make_oracle(model, data, accelerator, fmt, max_images=max_images, range_detector=range_detector,
                         device=device)
    from headstrong.campaign.progress import is_terminal, phase_lines

    estimates = {}
    lines = phase_lines() if show and not is_terminal(None) else None  # a log: plain lines, not a bar
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not show or lines is not None) as bar:
        task = bar.add_task("faults", total=None)

        def progress(done: int, total: int, phase: str) -> None:
            if lines is not None:
                lines(done, total, phase)
            bar.update(task, description=f"{phase}: sites", completed=done, total=max(total, 1))

        for name in names:
            params = pilot_params if name == "is-b" else {}
            estimates[name] = get(name, **params).estimate(oracle, samples=samples, seed=seed, progress=progress)
    exact = estimates["exact"].ra if "exact" in estimates else None
    return estimates, oracle, exact


def _table(estimates, oracle, exact):  # noqa: ANN001, ANN202
    from rich.table import Table

    acc = oracle.space.accelerator
    table = Table(title=f"Resiliency Accuracy: {acc.name} ({acc.dataflow}, {acc.rows}x{acc.cols}), "
                        f"{oracle.fmt}, {len(oracle.x)} images")
    for column in ("estimator", "samples", "RA", "95% interval", "software (uniform, no HW)"):
        table.add_column(column, justify="right" if column != "estimator" else "left")
    table.add_row("SA (no fault)", "", f"{oracle.sa * 100:.2f}%", "", "")
    for name, e in estimates.items():
        interval = "exact" if name == "exact" else f"[{e.ci[0] * 100:.2f}, {e.ci[1] * 100:.2f}]"
        count = f"{e.samples}" + (f" + {e.pilot_cost:.0f} (pilot)" if e.pilot else "")
        table.add_row(name, count, f"{e.ra * 100:.2f}%", interval, f"{e.software * 100:.2f}%")
    table.caption = (f"control faults: {oracle.space.p_control * 100:.1f}% of faults, "
                     f"{acc.control_crash * 100:.0f}% of them crash; distinct sites measured: {oracle.evaluated}; "
                     f"pilot cost in full-set faults (pilot faults x pilot images / images)")
    return table

"""Options that mean the same on every command, and the checks that run before anything loads.

``--device`` (default ``auto``) and ``--threads`` on every command that computes,
``--progress/--no-progress`` everywhere; ``--out`` checked to be a folder (or a file, for the
commands that write one file) before an hour of work is spent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def device_option(default: str = "auto") -> Any:
    """``--device``: auto (a GPU when there is one), cpu, cuda, cuda:N or mps."""
    return typer.Option(default, "--device", help="auto (a GPU if there is one), cpu, cuda, cuda:N or mps.")


def threads_option() -> Any:
    """``--threads``: torch's CPU threads; at least 1."""
    return typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's own choice).")


def progress_option() -> Any:
    """``--progress/--no-progress``."""
    return typer.Option(True, "--progress/--no-progress", help="Show progress while it runs.")


def setup_compute(device: str, threads: Optional[int] = None) -> str:
    """Check the device (a missing GPU is refused here, not deep inside a model) and set the
    threads; returns the device the command runs on, e.g. ``cpu`` for ``auto`` without a GPU."""
    from headstrong._device import resolve_device, set_threads

    resolved = resolve_device(device)
    set_threads(threads)
    return str(resolved)


def check_out_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` when it is a folder or does not exist yet; a file there is refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a file; give a folder (a new one, or an earlier run's to resume)")
    return path


def check_out_file(path: str | Path, option: str = "--out", example: str = "embeddings.pt") -> Path:
    """``path`` when it is a file or does not exist yet; a folder there is refused."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; give a file name such as {path / example}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"{option} {str(path)!r}: {str(path.parent)!r} is a file, not a folder; give a path inside a folder")
    return path


def named_model(name: str, num_classes: int, in_chans: int, side: int) -> Any:
    """An untrained baseline by backbone name for images of ``side`` pixels: small images get the
    CIFAR-style stem where the family has one (as ``train --small-input`` gives ResNets), the
    family's own stem otherwise (MobileNet, ViT, ...)."""
    from headstrong.textguided import build_baseline
    from headstrong.textguided.backbones import NoSmallInputStem

    try:
        return build_baseline(name, num_classes, in_chans, small_input=side <= 64)
    except NoSmallInputStem:
        return build_baseline(name, num_classes, in_chans)

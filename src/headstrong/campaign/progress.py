"""A rich progress bar for campaigns (faults done, rate, ETA) that can be switched off."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- faults/s" if speed is None else f"{speed:,.0f} faults/s", style="progress.data.speed")


@contextmanager
def campaign_progress(enabled: bool, total: int, done: int = 0) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; a no-op when disabled. ``done`` faults were stored by an earlier run."""
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("faults"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("campaign", total=total, completed=done)
        yield lambda n: bar.advance(task, n)

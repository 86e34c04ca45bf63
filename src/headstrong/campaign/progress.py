"""Campaign progress: a rich bar in a terminal, plain lines at a steady pace anywhere else.

A batch job or a redirected log gets one line when the campaign starts (how many (fault, image)
pairs are planned and, on a resumed run, how many were found done), a line every ``every`` seconds
while it runs, and one at the end, instead of nothing until the end. Campaigns count pairs: a
fault that meets N images (``images_per_fault``) is N pairs. Ctrl-C prints how far it got (what is
stored is kept; the command line's handler says how to resume) before the interrupt goes on.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TextIO

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

PLAIN_EVERY = 30.0  # seconds between plain progress lines


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- pairs/s" if speed is None else f"{speed:,.0f} pairs/s", style="progress.data.speed")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def start_line(total: int, done: int, what: str = "campaign", unit: str = "(fault, image) pairs") -> str:
    """The first line: what is planned and, on a resumed run, how much was found done."""
    if done <= 0:
        return f"{what}: {total:,} {unit} planned"
    if done >= total:
        return f"{what}: all {total:,} planned {unit} were found done; nothing left to run"
    return (f"{what}: resuming: {done:,} of {total:,} planned {unit} ({done / total:.0%}) were found done, "
            f"{total - done:,} left to run")


class PlainProgress:
    """Progress as plain lines, at most one every ``every`` seconds (and one at the end)."""

    def __init__(self, total: int, done: int, stream: TextIO, every: float = PLAIN_EVERY,
                 clock: Callable[[], float] = time.monotonic, unit: str = "pairs") -> None:
        self.total, self.done, self.stream, self.every, self.clock = total, done, stream, every, clock
        self.unit = unit
        self.start_done = done
        self.started = self.last = clock()

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def line(self) -> str:
        ran = self.done - self.start_done
        elapsed = self.clock() - self.started
        rate = ran / elapsed if elapsed > 0 else 0.0
        text = f"{self.unit} {self.done:,}/{self.total:,} ({self.done / max(self.total, 1):.0%})"
        if rate > 0:
            left = (self.total - self.done) / rate
            speed = f"{rate:,.0f} {self.unit}/s" if rate >= 1 else f"{1 / rate:,.1f} s per {self.unit.rstrip('s')}"
            text += f", {speed}" + (f", about {_duration(left)} left" if self.done < self.total else "")
        return text + f", {_duration(elapsed)} elapsed"

    def advance(self, n: int) -> None:
        self.done += n
        if self.clock() - self.last >= self.every and self.done < self.total:
            self.last = self.clock()
            self.say(self.line())


def is_terminal(stream: Optional[TextIO]) -> bool:
    """Whether ``stream`` (default stderr) is a terminal: a bar there, plain lines anywhere else."""
    stream = stream if stream is not None else sys.stderr
    return bool(hasattr(stream, "isatty") and stream.isatty())


def phase_lines(stream: Optional[TextIO] = None, unit: str = "sites",
                every: float = PLAIN_EVERY) -> Callable[[int, int, str], None]:
    """A ``progress(done, total, phase)`` callback that writes plain lines: one when a phase starts,
    at most one every ``every`` seconds, one when it ends (for estimators that report by phase)."""
    stream = stream if stream is not None else sys.stderr
    state: dict[str, object] = {}

    def progress(done: int, total: int, phase: str) -> None:
        tracker = state.get("tracker")
        if not isinstance(tracker, PlainProgress) or state.get("key") != (phase, total) or done < tracker.done:
            tracker = PlainProgress(total, 0, stream, every, unit=unit)
            state.update(tracker=tracker, key=(phase, total))
            tracker.say(f"{phase}: {total:,} {unit} to measure")
        tracker.advance(done - tracker.done)
        if total and done >= total:
            tracker.say(f"{phase}: " + tracker.line() + ": done")

    return progress


@contextmanager
def campaign_progress(enabled: bool, total: int, done: int = 0, *, stream: Optional[TextIO] = None,
                      every: float = PLAIN_EVERY) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; a no-op when disabled. ``total`` and ``done`` count (fault, image) pairs;
    ``done`` were stored by an earlier run.

    ``stream`` (default stderr) decides the form: a terminal gets the bar, anything else plain lines.
    """
    if not enabled:
        yield lambda n: None
        return
    stream = stream if stream is not None else sys.stderr
    if not is_terminal(stream):
        plain = PlainProgress(total, done, stream, every)
        plain.say(start_line(total, done))
        try:
            yield plain.advance
        except KeyboardInterrupt:
            plain.say(f"campaign: interrupted at {plain.done:,} of {total:,} pairs; the finished chunks are stored")
            raise
        if plain.done > plain.start_done:
            plain.say(plain.line() + ": done")
        return
    columns = (
        TextColumn("pairs"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    console = Console(file=stream)
    if done > 0:
        console.print(start_line(total, done))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("campaign", total=total, completed=done)
        try:
            yield lambda n: bar.advance(task, n)
        except KeyboardInterrupt:
            bar.stop()
            console.print(f"campaign: interrupted at {int(bar.tasks[0].completed):,} of {total:,} pairs; "
                          "the finished chunks are stored")
            raise

"""The wall time of each stage of a study, kept across kills and resumes.

Each finished stage (training a model, hardening it, one campaign, the statistics, the report)
appends one line to ``timings.jsonl`` in the study folder, with the attempt it ran in, so a study
killed and resumed still accounts for the time every attempt spent; ``stage_table`` sums them.
CPU time (this process, all threads) is kept beside the wall time: on a shared machine the wall
time says what the run cost there, the CPU time what it would cost on a quiet one.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

FILE = "timings.jsonl"


@dataclass(frozen=True)
class StageTime:
    attempt: int
    stage: str  # train, harden, campaign, compare, statistics, report
    cell: str
    campaign: str
    wall_s: float
    cpu_s: float
    finished: str  # UTC, ISO 8601


class StageClock:
    """Times stages of one attempt of a study and appends them to ``out/timings.jsonl``."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / FILE
        previous = read_times(self.path.parent)
        self.attempt = 1 + max((t.attempt for t in previous), default=0)

    @contextmanager
    def stage(self, stage: str, cell: str = "", campaign: str = "") -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        entry = StageTime(self.attempt, stage, cell, campaign, round(time.perf_counter() - wall, 3),
                          round(time.process_time() - cpu, 3), datetime.now(timezone.utc).isoformat(timespec="seconds"))
        cut = self.path.exists() and self.path.stat().st_size > 0 and not self.path.read_bytes().endswith(b"\n")
        with self.path.open("a") as handle:  # after a line a kill cut short, start a new one
            handle.write(("\n" if cut else "") + json.dumps(asdict(entry)) + "\n")


def read_times(out: Path) -> list[StageTime]:
    """Every stage recorded in a study folder (a line cut short by a kill is skipped)."""
    path = Path(out) / FILE
    if not path.exists():
        return []
    times = []
    for line in path.read_text().splitlines():
        try:
            times.append(StageTime(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return times


def stage_table(out: Path) -> pd.DataFrame:
    """Per stage: how many ran, their wall and CPU seconds summed over every attempt."""
    times = read_times(out)
    if not times:
        return pd.DataFrame(columns=["stage", "count", "wall_s", "cpu_s", "attempts"])
    frame = pd.DataFrame([asdict(t) for t in times])
    table = frame.groupby("stage", sort=False).agg(count=("wall_s", "size"), wall_s=("wall_s", "sum"),
                                                    cpu_s=("cpu_s", "sum"), attempts=("attempt", "nunique"))
    total = pd.DataFrame([{"count": len(frame), "wall_s": frame["wall_s"].sum(), "cpu_s": frame["cpu_s"].sum(),
                           "attempts": frame["attempt"].nunique()}], index=pd.Index(["total"], name="stage"))
    return pd.concat([table, total]).reset_index()

"""One run per folder: a lock file that a second run is refused by and a crashed run does not leave stuck.

Two runs writing one output folder mix silently (the manifest of one over the chunks of the other,
the accuracy of one beside the weights of the other). ``hold_folder`` makes a run hold its folder
for as long as it writes there: the lock file is created atomically (``O_CREAT | O_EXCL``, so of two
runs started at the same moment exactly one wins) and records who holds it. A second holder gets a
ValueError naming that process. A lock whose process is no longer alive on this host (killed with
``kill -9``, crashed, machine rebooted) is taken over without a word, so a crash never needs a
manual clean-up. The lock is removed in ``finally``.

Holding is per process and re-entrant within it: a run that locks ``--out`` and then calls a
library function that locks the same folder (``train`` inside a study) does not refuse itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = ".headstrong.lock"

_held: dict[Path, int] = {}  # folders this process holds -> nesting depth
_held_guard = threading.Lock()


@dataclass(frozen=True)
class LockHolder:
    """Who holds a folder: what the lock file says."""

    pid: int
    host: str
    command: str
    since: str  # ISO 8601, UTC
    what: str
    started: int | None = None  # the process's start time in clock ticks since boot (Linux), against pid reuse

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} ({self.what}: {self.command!r}, since {self.since})"


def _this_holder(what: str) -> LockHolder:
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = " ".join(sys.argv) if sys.argv and sys.argv[0] else sys.executable
    return LockHolder(pid=os.getpid(), host=socket.gethostname(), command=command, since=since, what=what,
                      started=_start_ticks(os.getpid()))


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (Linux /proc), so a recycled pid is not taken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in () may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _read_holder(lock: Path) -> LockHolder | None:
    """The holder a lock file names, or None when it cannot be read (being written, damaged)."""
    try:
        data = json.loads(lock.read_text())
        return LockHolder(pid=int(data["pid"]), host=str(data["host"]), command=str(data["command"]),
                          since=str(data["since"]), what=str(data.get("what", "run")),
                          started=None if data.get("started") is None else int(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(holder: LockHolder | None, lock: Path, grace_s: float) -> bool:
    """A lock is stale when its process is gone from this host.

    A lock from another host cannot be checked, so it is never taken over. A lock that cannot be
    read is stale only after ``grace_s`` (its writer may be between create and write).
    """
    if holder is None:
        try:
            return time.time() - lock.stat().st_mtime > grace_s
        except FileNotFoundError:
            return True
    if holder.host != socket.gethostname():
        return False
    if not _alive(holder.pid):
        return True
    now = _start_ticks(holder.pid)
    return holder.started is not None and now is not None and now != holder.started


def _try_create(lock: Path, holder: LockHolder) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": holder.pid, "host": holder.host, "command": holder.command,
                   "since": holder.since, "what": holder.what, "started": holder.started}, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _take_over_stale(lock: Path, seen: LockHolder | None) -> None:
    """Remove a stale lock, unless another process replaced it meanwhile.

    Renaming it aside first means two processes that both saw the stale lock cannot both remove
    it after one of them already created a fresh one: only one rename of a given file succeeds.
    """
    aside = lock.with_name(f"{lock.name}.stale.{os.getpid()}")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    if _read_holder(aside) != seen:  # a fresh lock came between our read and our rename: put it back
        try:
            os.link(aside, lock)
        except OSError:
            pass
    aside.unlink(missing_ok=True)


def _refusal(path: Path, holder: LockHolder | None, lock: Path) -> ValueError:
    who = holder.describe() if holder is not None else "another process (its lock file is being written)"
    return ValueError(
        f"{path} is in use by {who}; wait for it to finish, or use another folder. "
        f"If that process is gone (another host, a killed container), delete {lock}"
    )


@contextmanager
def hold_folder(path: str | Path, what: str = "run", *, grace_s: float = 10.0) -> Iterator[Path]:
    """Hold ``path`` (created if missing) for one run; a second holder gets a ValueError saying who holds it.

    ``what`` names the run in the lock file and in the refusal ("inject", "train", ...). A lock
    left by a process that is no longer alive on this host is taken over silently. Yields the
    folder; the lock is removed when the block ends, by return or by exception, and a folder
    this call created is removed again if the run left it empty.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; --out must be a folder (or a path that does not exist yet)")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    lock = key / LOCK_NAME
    with _held_guard:
        if key in _held:
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield folder
        finally:
            with _held_guard:
                _held[key] -= 1
        return

    me = _this_holder(what)
    for _ in range(100):  # each pass either creates the lock, refuses, or removes a stale one
        if _try_create(lock, me):
            break
        holder = _read_holder(lock)
        if not _is_stale(holder, lock, grace_s):
            raise _refusal(folder, holder, lock)
        _take_over_stale(lock, holder)
    else:  # pragma: no cover - a lock replaced a hundred times in a row by other processes
        raise _refusal(folder, _read_holder(lock), lock)
    with _held_guard:
        _held[key] = 1
    try:
        yield folder
    finally:
        with _held_guard:
            del _held[key]
        if _read_holder(lock) == me:
            lock.unlink(missing_ok=True)
        if created:  # a run that wrote nothing (refused input, an early error) leaves no folder behind
            try:
                folder.rmdir()
            except OSError:
                pass

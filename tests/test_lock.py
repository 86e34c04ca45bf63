"""One run per folder (issue 16.2): a second run is refused and told who holds the folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headstrong._lock import LOCK_NAME, hold_folder

_HOLDER = textwrap.dedent("""
    import sys
    from headstrong._lock import hold_folder
    with hold_folder(sys.argv[1], "inject"):
        print("held", flush=True)
        sys.stdin.read()  # hold until the parent closes our stdin
""")


def _start_holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_is_refused_with_who_holds_the_folder(tmp_path):
    folder = tmp_path / "run"  # does not exist yet
    proc = _start_holder(folder)
    try:
        with pytest.raises(ValueError) as err:
            with hold_folder(folder, "train"):
                pass
        msg = str(err.value)
        assert f"process {proc.pid}" in msg and "inject" in msg and "since" in msg
        assert "wait for it to finish, or use another folder" in msg
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert not (folder / LOCK_NAME).exists()
    with hold_folder(folder, "train"):  # free again once the holder ended
        assert (folder / LOCK_NAME).exists()


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    proc = _start_holder(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    assert (tmp_path / LOCK_NAME).exists()  # kill -9 ran no finally
    with hold_folder(tmp_path, "inject"):
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid()


def test_a_stale_lock_is_taken_over_silently(tmp_path):
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "headstrong inject",
             "since": "2026-01-01T00:00:00+00:00", "what": "inject"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with hold_folder(tmp_path, "train"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_recycled_pid_does_not_keep_a_stale_lock(tmp_path):
    # the lock names a live pid (ours) but a start time that is not this process's
    stale = {"pid": os.getppid(), "host": socket.gethostname(), "command": "x", "since": "s",
             "what": "inject", "started": 1}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    if not Path(f"/proc/{os.getppid()}/stat").exists():
        pytest.skip("no /proc: start times cannot be compared")
    with hold_folder(tmp_path, "train"):
        pass


def test_a_lock_from_another_host_is_refused(tmp_path):
    other = {"pid": 1, "host": "elsewhere.invalid", "command": "headstrong train", "since": "s", "what": "train"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(ValueError, match="elsewhere.invalid.*delete"):
        with hold_folder(tmp_path):
            pass


def test_released_on_exception_and_reentrant_in_one_process(tmp_path):
    with pytest.raises(RuntimeError):
        with hold_folder(tmp_path, "train"):
            with hold_folder(tmp_path, "train"):  # a library call inside the same run
                pass
            assert (tmp_path / LOCK_NAME).exists()
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        with hold_folder(f):
            pass


def test_processes_started_together_never_hold_at_once(tmp_path):
    code = textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from headstrong._lock import hold_folder
        go = float(sys.argv[2])
        while time.time() < go:  # all start their attempt at the same moment
            pass
        try:
            with hold_folder(sys.argv[1], "inject"):
                start = time.time()
                time.sleep(0.5)
                Path(sys.argv[1], f"held.{os.getpid()}").write_text(f"{start} {time.time()}")
        except ValueError:
            pass
    """)
    import time

    go = str(time.time() + 3.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), go]) for _ in range(4)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    spans = sorted(tuple(map(float, f.read_text().split())) for f in tmp_path.glob("held.*"))
    assert 1 <= len(spans) < 4  # some were refused
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end  # never two holders at once
    assert not (tmp_path / LOCK_NAME).exists()


def test_train_and_study_refuse_a_folder_another_run_holds(tmp_path):
    from headstrong.study.demo import demo_config, run_demo
    from headstrong.train.recipe import TrainConfig, train

    train_dir, study_dir = tmp_path / "train", tmp_path / "study"
    holders = [_start_holder(train_dir), _start_holder(study_dir)]
    try:
        with pytest.raises(ValueError, match=f"in use by process {holders[0].pid}"):
            train(TrainConfig(epochs=1, limit_train=64, limit_test=64, device="cpu"), train_dir, progress=False)
        assert not (train_dir / "model.pt").exists()
        with pytest.raises(ValueError, match=f"in use by process {holders[1].pid}"):
            run_demo(demo_config(out=str(study_dir)), progress=False)
        assert not (study_dir / "study.json").exists()
    finally:
        for proc in holders:
            proc.stdin.close()
            proc.wait(timeout=30)


def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    folder = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="bad input"):
        with hold_folder(folder, "train"):
            raise ValueError("bad input")
    assert not folder.exists()
    with hold_folder(folder, "train"):
        (folder / "model.pt").write_text("x")
    assert (folder / "model.pt").exists() and not (folder / LOCK_NAME).exists()


def test_ra_refuses_an_out_another_run_holds(tmp_path):
    from typer.testing import CliRunner

    from headstrong.cli.main import app

    out = tmp_path / "ra"
    proc = _start_holder(out)
    try:
        result = CliRunner().invoke(app, ["ra", str(tmp_path / "model.pt"), "--samples", "5", "--out", str(out)])
        assert result.exit_code == 2
        assert f"in use by process {proc.pid}" in result.output
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_campaign_refuses_an_out_another_run_holds(tmp_path):
    import torch
    from torch import nn

    import headstrong as hs

    out = tmp_path / "run"
    proc = _start_holder(out)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
        x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
        spec = hs.CampaignSpec(kind="weight", n_faults=4, only_correct=False, seed=1)
        with pytest.raises(ValueError, match=f"in use by process {proc.pid} .*inject"):
            hs.run_campaign(model, (x, y), spec, "cpu", out, progress=False)
        assert not (out / "manifest.json").exists()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)

"""``headstrong harden``: a hardened checkpoint and a summary; bad input is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import headstrong as hs
from headstrong.cli.main import app
from headstrong.train import load_checkpoint, save_checkpoint

from _models import one_thread  # noqa: F401  (autouse fixture)

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", 10, 1).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "model.pt", model, config={"dataset": "fashion-mnist"})


def test_harden_writes_checkpoint_and_summary(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "hard"
    result = runner.invoke(app, ["harden", str(checkpoint), "--method", "clip+duplicate", "--out", str(out),
                                 "--bounds", "q0.999", "--redundancy", "tmr", "--test-images", "64",
                                 "--profile-images", "64"])
    assert result.exit_code == 0, result.output
    assert "Bounds" in result.output and "top-1 on 64" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["clip", "duplicate"]
    assert summary["bounds"] and all(b["mode"] == "zero" for b in summary["bounds"])
    assert summary["macs_after"] == summary["macs_before"] + 2 * 64 * 10  # the head twice more
    change, low, high = summary["top1_change_pp"]  # the accuracy change carries its paired interval
    assert change == pytest.approx(summary["top1_after"] - summary["top1_before"]) and low <= change <= high
    assert "95% paired interval [" in " ".join(result.output.split())
    model, _ = load_checkpoint(out / "model.pt")
    assert [s["method"] for s in model.hardening] == ["range", "duplicate"]
    assert hs.injectable_layers(model) == hs.injectable_layers(hs.build_baseline("cnn-small", 10, 1))


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "ranger"], "allowed: none, fault-aware, range, clip, duplicate"),
    (["--method", "range", "--bounds", "q2"], "(0, 1]"),
    (["--method", "range", "--where", "everywhere"], "activations, layers"),
    (["--method", "fault-aware", "--rate", "2"], "[0, 1]"),
    (["--method", "range+clip"], "choose one"),
])
def test_bad_input_is_one_error_line(tmp_path: Path, checkpoint: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["harden", str(checkpoint), "--out", str(tmp_path / "x"), "--test-images", "8",
                                 "--profile-images", "8", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_a_folder_another_run_holds_is_refused(tmp_path: Path, checkpoint: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom headstrong._lock import hold_folder\n"
         "with hold_folder(sys.argv[1], 'harden'):\n    print('held', flush=True)\n    time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["harden", str(checkpoint), "--method", "range", "--out", str(out),
                                     "--test-images", "8", "--profile-images", "8"])
        assert result.exit_code == 2 and f"process {holder.pid}" in result.output
        assert not (out / "model.pt").exists()
    finally:
        holder.kill()
        holder.wait()

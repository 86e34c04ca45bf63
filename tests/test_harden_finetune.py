"""Fault-aware fine-tuning: flips where and as many as asked, the recipe's own loop, resume
after SIGKILL with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import headstrong as hs
from headstrong.harden.finetune import FaultInjector
from headstrong.train import load_checkpoint, read_checkpoint

from _models import one_thread  # noqa: F401  (autouse fixture)

TINY = {"batch_size": 32, "limit_train": 96, "limit_test": 64, "threads": 1}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return hs.build_baseline("cnn-small", 10, 1).eval()


def test_k_flips_per_batch_hit_k_values_and_pass_gradients() -> None:
    model = _model()
    x = torch.randn(4, 1, 28, 28)
    inject = FaultInjector("fp32", "neuron", ["head"], rate=None, flips=3)
    torch.manual_seed(1)
    clean = model(x)
    faulty = inject(model, x)
    changed = int((faulty != clean).sum())
    assert 1 <= changed <= 3
    faulty.sum().backward()  # straight through: the head still gets a gradient
    assert model.head.weight.grad is not None and torch.isfinite(model.head.weight.grad).all()
    assert torch.isfinite(faulty).all()  # Inf/NaN from a flip train as 0
    weights = FaultInjector("int8", "weight", ["head"], rate=None, flips=2)
    assert not torch.equal(weights(model, x), model(x))
    assert torch.equal(FaultInjector("fp32", "both", ["head"], rate=0.0, flips=None)(model, x), model(x))


def test_finetune_returns_a_new_model_with_its_record(tmp_path: Path) -> None:
    model = _model()
    hard = hs.harden.range_restrict(model, torch.randn(8, 1, 28, 28))
    before = {k: v.clone() for k, v in hard.state_dict().items()}
    tuned = hs.harden.fault_aware_finetune(hard, "fashion-mnist", kind="both", rate=1e-4, epochs=1,
                                           out=tmp_path / "ft", **TINY)
    assert [s["method"] for s in tuned.hardening] == ["range", "fault-aware"]
    assert all(torch.equal(v, before[k]) for k, v in hard.state_dict().items())  # caller's untouched
    assert not torch.equal(tuned.state_dict()["head.weight"], before["head.weight"])
    assert hs.injectable_layers(tuned) == hs.injectable_layers(model)
    loaded, config = load_checkpoint(tmp_path / "ft" / "model.pt")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), tuned(x)) and config["lr"] == 0.01


def test_bad_input() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hs.harden.fault_aware_finetune(model, "fashion-mnist", rate=1.5)
    with pytest.raises(ValueError, match="exactly one of rate"):
        hs.harden.fault_aware_finetune(model, "fashion-mnist")
    with pytest.raises(ValueError, match="neuron, weight, both"):
        hs.harden.fault_aware_finetune(model, "fashion-mnist", kind="bias", rate=1e-6)
    with pytest.raises(ValueError, match="fp32"):
        hs.harden.fault_aware_finetune(model, "fashion-mnist", fmt="fp33", rate=1e-6)
    with pytest.raises(ValueError, match="injectable layers"):
        hs.harden.fault_aware_finetune(model, "fashion-mnist", rate=1e-6, layers=["nope"])


_SCRIPT = """
import pathlib, sys, time
import torch
torch.set_num_threads(1)
import headstrong as hs
from headstrong.harden.finetune import FaultInjector
checkpoint = pathlib.Path(sys.argv[1]) / "model.pt"
step = FaultInjector.__call__
def first_step_of_epoch_2(self, model, x):  # the first epoch's checkpoint is on disk: wait for the kill
    if sys.argv[2] == "pause" and checkpoint.exists():
        print("saved", flush=True)
        time.sleep(120)
    return step(self, model, x)
FaultInjector.__call__ = first_step_of_epoch_2
torch.manual_seed(0)
model = hs.build_baseline("cnn-small", 10, 1)
hs.harden.fault_aware_finetune(model, "fashion-mnist", kind="neuron", flips=4, epochs=2, out=sys.argv[1],
                               batch_size=32, limit_train=96, limit_test=64, threads=1)
"""


def _run(script: Path, out: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(out), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path: Path) -> None:
    script = tmp_path / "finetune.py"
    script.write_text(_SCRIPT)
    killed = _run(script, tmp_path / "killed", "pause")
    straight = _run(script, tmp_path / "straight", "plain")
    ckpt = tmp_path / "killed" / "model.pt"
    try:  # the paused run prints "saved" once its first checkpoint is on disk, then waits
        said = killed.stdout.readline()
        assert said.strip() == "saved", killed.stderr.read()
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(30) == -signal.SIGKILL
    finally:
        if killed.poll() is None:
            killed.kill()
    assert read_checkpoint(ckpt)["epoch"] == 1
    resumed = _run(script, tmp_path / "killed", "plain")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err
    a, b = read_checkpoint(ckpt), read_checkpoint(tmp_path / "straight" / "model.pt")
    assert a["finished"] and a["epoch"] == b["epoch"] == 2
    assert a["hardening"][-1]["method"] == "fault-aware"
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key
    assert json.loads((tmp_path / "killed" / "fault_aware.json").read_text())["flips"] == 4

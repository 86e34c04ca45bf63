"""Resume after SIGKILL: a real subprocess killed mid-run, then finished in-process, must store
exactly the records of an uninterrupted run; damaged chunks are redone; other campaigns refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import headstrong as hs
from _models import one_thread  # noqa: F401  (autouse fixture: one intra-op thread per test)
from headstrong.campaign import storage

HERE = Path(__file__).resolve().parent
LAYOUT = {"batch_size": 8, "chunk_size": 16}


def tiny_model() -> nn.Module:
    """A small CNN, the same weights in every process."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5),
    ).eval()


def tiny_data(model: nn.Module, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels; every other label is the model's own answer, so only_correct matters."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.where(torch.arange(n) % 2 == 0, pred, (pred + 1) % 5)
    return x, y


def spec(n_faults: int = 40) -> hs.CampaignSpec:
    return hs.CampaignSpec(kind="neuron", layers="all", fmt="fp32", bits=None, n_faults=n_faults, seed=3)


def run(out: Path, n_faults: int = 40, **layout: int) -> hs.campaign.CampaignResult:
    model = tiny_model()
    return hs.run_campaign(model, tiny_data(model), spec(n_faults), "cpu", out, progress=False, **(layout or LAYOUT))


def _sorted(records: pd.DataFrame) -> pd.DataFrame:
    return records.sort_values("fault_id").reset_index(drop=True)


_CHILD = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {here!r})
from test_campaign_resume import run
run(__import__("pathlib").Path({out!r}), n_faults={n})
"""


def test_sigkill_mid_run_then_resume_gives_exactly_the_uninterrupted_records(tmp_path: Path) -> None:
    n = 400  # 400 faults x 3 layers in chunks of 16: 75 chunk files
    reference = run(tmp_path / "whole", n_faults=n)
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(here=str(HERE), out=str(out), n=n)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunks = out / storage.CHUNKS
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if chunks.is_dir() and len(list(chunks.glob("*.parquet"))) >= 6:
                break
            time.sleep(0.005)
        still_running = child.poll() is None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert still_running, f"the child finished before it could be killed: {child.stderr.read().decode()[-2000:]}"
    stored = len(list(chunks.glob("*.parquet")))
    expected = len(reference.manifest["units"])
    assert 6 <= stored < expected  # really interrupted, with some work kept
    resumed = run(out, n_faults=n)
    pd.testing.assert_frame_equal(_sorted(resumed.records), _sorted(reference.records))
    assert resumed.records["fault_id"].is_unique
    assert not list(chunks.glob("*.tmp"))


def test_truncated_chunk_is_detected_and_redone(tmp_path: Path) -> None:
    first = run(tmp_path / "r")
    victim = sorted((tmp_path / "r" / storage.CHUNKS).glob("*.parquet"))[2]
    size = victim.stat().st_size
    with open(victim, "r+b") as handle:
        handle.truncate(size // 3)
    with pytest.raises(ValueError, match=f"{victim.name}.*corrupt or truncated.*rerun"):
        hs.load_results(tmp_path / "r")
    again = run(tmp_path / "r")
    pd.testing.assert_frame_equal(again.records, first.records)
    assert victim.stat().st_size == size


def test_deleted_chunk_is_redone_and_others_are_not_rewritten(tmp_path: Path) -> None:
    run(tmp_path / "r")
    files = sorted((tmp_path / "r" / storage.CHUNKS).glob("*.parquet"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()
    run(tmp_path / "r")
    assert files[0].exists()
    assert all(f.stat().st_mtime_ns == stamps[f] for f in files[1:])


def test_other_spec_or_model_on_same_out_is_refused_and_nothing_touched(tmp_path: Path) -> None:
    out = tmp_path / "r"
    run(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    model = tiny_model()
    data = tiny_data(model)
    with pytest.raises(ValueError, match=r"different campaign: the spec \(seed\).*new out"):
        hs.run_campaign(model, data, spec().replace(seed=4), "cpu", out, progress=False)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1.0
    with pytest.raises(ValueError, match="different campaign: the model"):
        hs.run_campaign(model, data, spec(), "cpu", out, progress=False)
    with pytest.raises(ValueError, match="chunk_size=32 differs from the chunk_size=16"):
        hs.run_campaign(tiny_model(), data, spec(), "cpu", out, progress=False, chunk_size=32)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_a_chunk_from_another_run_or_of_another_schema_is_named_then_redone(tmp_path: Path) -> None:
    first = run(tmp_path / "r")
    model = tiny_model()
    hs.run_campaign(model, tiny_data(model), spec().replace(seed=4), "cpu", tmp_path / "other", progress=False, **LAYOUT)
    victim = sorted((tmp_path / "r" / storage.CHUNKS).glob("*.parquet"))[1]
    source = tmp_path / "other" / storage.CHUNKS / victim.name
    for suffix in ("", ".check"):  # the other run's chunk and its checksum record, copied over ours
        Path(f"{victim}{suffix}").write_bytes(Path(f"{source}{suffix}").read_bytes())
    with pytest.raises(ValueError, match=f"{victim.name}' belongs to another run \\(seed 4.*rerun"):
        hs.load_results(tmp_path / "r")
    with pytest.warns(storage.ChunkRedone, match=victim.name):
        again = run(tmp_path / "r")
    pd.testing.assert_frame_equal(again.records, first.records)

    # a chunk whose schema cannot join the others' (a column of another type) is named, then redone
    manifest = storage.read_manifest(tmp_path / "r")
    unit = next(u for u in manifest["units"] if victim.name.startswith(u["id"]))
    table = storage.read_chunk(victim, unit["id"], unit["stop"] - unit["start"])
    storage.write_chunk(tmp_path / "r", unit["id"], table.set_column(0, table.field(0).name, table.column(0).cast("string")))
    with pytest.raises(ValueError, match=f"{victim.name}' has a Parquet schema unlike the run's others"):
        hs.load_results(tmp_path / "r")
    with pytest.warns(storage.ChunkRedone, match=victim.name):
        again = run(tmp_path / "r")
    pd.testing.assert_frame_equal(again.records, first.records)


@pytest.mark.parametrize("edit", ["drop a unit", "fmt"])
def test_an_edited_manifest_is_named_and_the_run_refused(tmp_path: Path, edit: str) -> None:
    import json

    run(tmp_path / "r")
    path = tmp_path / "r" / storage.MANIFEST
    manifest = json.loads(path.read_text())
    if edit == "fmt":
        manifest["spec"]["fmt"] = "bf16"
    else:
        manifest["units"].pop(1)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="manifest.json' was edited after the run wrote it"):
        hs.load_results(tmp_path / "r")
    with pytest.raises(ValueError, match="manifest.json' was edited after the run wrote it"):
        run(tmp_path / "r")

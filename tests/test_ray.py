"""The Ray backend on a local two-CPU instance: the same records as the local backend, fault models too."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

import headstrong as hs
from headstrong.campaign import storage
from test_campaign_resume import LAYOUT, one_thread, tiny_data, tiny_model  # noqa: F401  (one_thread: autouse fixture)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_backend_equals_local_bit_for_bit_and_resumes(tmp_path: Path, local_ray: None) -> None:
    model = tiny_model()
    data = tiny_data(model)
    spec = hs.CampaignSpec(kind="neuron", n_faults=60, seed=11)
    local = hs.run_campaign(model, data, spec, "cpu", tmp_path / "local", progress=False, **LAYOUT)
    out = tmp_path / "ray"
    remote = hs.run_campaign(model, data, spec, "cpu", out, backend="ray", progress=False, **LAYOUT)
    key = ["fault_id", "sample"]
    pd.testing.assert_frame_equal(
        remote.records.sort_values(key).reset_index(drop=True), local.records.sort_values(key).reset_index(drop=True)
    )
    files = sorted((out / storage.CHUNKS).glob("*.parquet"))
    assert [f.name for f in files] == sorted(f.name for f in (tmp_path / "local" / storage.CHUNKS).glob("*.parquet"))
    for victim in files[1::4]:  # lose some chunks: the Ray run redoes exactly those
        victim.unlink()
    again = hs.run_campaign(model, data, spec, "cpu", out, backend="ray", progress=False)
    pd.testing.assert_frame_equal(again.records, remote.records)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("weight", {"fault_model": "stuck-at-1", "fmt": "int8"}),
        ("neuron", {"fault_model": "multi-site", "sites": 2}),
        ("weight", {"fault_model": "ber", "ber": 1e-3}),
    ],
)
def test_ray_backend_equals_local_under_fault_models(tmp_path: Path, local_ray: None, kind: str, params: dict) -> None:
    model = tiny_model()
    data = tiny_data(model)
    spec = hs.CampaignSpec(kind=kind, n_faults=12, seed=5, only_correct=False, **params)
    local = hs.run_campaign(model, data, spec, "cpu", tmp_path / "local", progress=False, **LAYOUT)
    remote = hs.run_campaign(model, data, spec, "cpu", tmp_path / "ray", backend="ray", progress=False, **LAYOUT)
    key = ["fault_id", "sample"]
    pd.testing.assert_frame_equal(
        remote.records.sort_values(key).reset_index(drop=True), local.records.sort_values(key).reset_index(drop=True)
    )
    assert len(local.records) > 0

"""Cost of hardening, measured: MACs of the operations that run, stored numbers, latency."""

from __future__ import annotations

import pytest
import torch

import headstrong as hs

from _models import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return hs.build_baseline("cnn-small", 10, 1).eval()


def test_macs_and_params(model: torch.nn.Module) -> None:
    x = torch.randn(8, 1, 28, 28)
    head_macs = model.head.in_features * model.head.out_features
    base = hs.harden.count_macs(model, x)
    assert hs.harden.count_macs(hs.harden.range_restrict(model, x), x) == base  # clamps are no MACs
    assert hs.harden.count_macs(hs.harden.duplicate(model, ["head"]), x) == base + head_macs
    assert hs.harden.count_macs(hs.harden.duplicate(model, ["head"], mode="tmr"), x) == base + 2 * head_macs
    ranged = hs.harden.range_restrict(model, x)
    sites = len(ranged.hardening[0]["sites"])
    assert hs.harden.count_params(ranged) == hs.harden.count_params(model) + 2 * sites  # low, high per site
    separate = hs.harden.duplicate(model, ["head"], mode="tmr", separate_weights=True)
    extra = 2 * sum(p.numel() for p in model.head.parameters())
    assert hs.harden.count_params(separate) == hs.harden.count_params(model) + extra


def test_latency_measured_in_one_run(model: torch.nn.Module) -> None:
    x = torch.randn(16, 1, 28, 28)
    cost = hs.harden.measure_cost(hs.harden.duplicate(model, ["head"]), model, x, repeats=6)
    assert cost.latency_s > 0 and cost.latency_reference_s > 0
    low, high = cost.latency_overhead_ci
    assert low <= high
    assert cost.to_dict()["latency_overhead_ci_low"] == low
    with pytest.raises(ValueError, match="repeats"):
        hs.harden.measure_cost(model, model, x, repeats=1)

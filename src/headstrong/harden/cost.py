"""What hardening costs, measured: parameters, multiply-accumulates and CPU latency, hardened
against unhardened in the same run.

MACs are counted from the operations that actually run (``torch.utils.flop_counter``: matrix
products and convolutions; a fault-free DMR pass runs the duplicated layer twice, TMR three
times; clamps and comparisons are elementwise and count as no MAC). Latency is the median over
``repeats`` of one batch's forward pass, the two models timed in alternating order so that load
from other processes hits both alike; the overhead's interval is a bootstrap over those pairs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from headstrong.harden._graph import HARDEN_ATTR

__all__ = ["Cost", "measure_cost", "count_macs", "count_params"]


@dataclass(frozen=True)
class Cost:
    """One hardened model against its reference, measured in one run."""

    params: int
    params_reference: int
    macs: int  # per image
    macs_reference: int
    latency_s: float  # median over repeats, one batch
    latency_reference_s: float
    latency_overhead: float  # latency_s / latency_reference_s - 1
    latency_overhead_ci: tuple[float, float]  # 95% bootstrap interval over the paired repeats
    batch: int
    repeats: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_overhead_ci_low"], data["latency_overhead_ci_high"] = data.pop("latency_overhead_ci")
        return data


def count_params(model: nn.Module) -> int:
    """Parameters plus the numbers hardening stores beside them (bounds, separate weight copies)."""
    params = sum(p.numel() for p in model.parameters())
    store = getattr(model, HARDEN_ATTR, None)
    extra = sum(b.numel() for b in store.buffers()) if store is not None else 0
    return int(params + extra)


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per image of one fault-free forward pass of ``x``."""
    training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(training)
    return int(counter.get_total_flops() // 2 // max(1, len(x)))


@torch.no_grad()
def measure_cost(hardened: nn.Module, reference: nn.Module, x: torch.Tensor, *, repeats: int = 30,
                 warmup: int = 3, threads: int = 1, seed: int = 0) -> Cost:
    """Parameters, MACs and median latency of ``hardened`` and ``reference`` on batch ``x``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2 (the latency is a median over them); got {repeats!r}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    models = (hardened.eval(), reference.eval())
    try:
        for _ in range(warmup):
            for model in models:
                model(x)
        times: tuple[list[float], list[float]] = ([], [])
        for r in range(repeats):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                start = time.perf_counter()
                models[i](x)
                times[i].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)
    hard_t, ref_t = times
    ratio = statistics.median(hard_t) / statistics.median(ref_t) - 1.0
    return Cost(
        params=count_params(hardened), params_reference=count_params(reference),
        macs=count_macs(hardened, x[:1]), macs_reference=count_macs(reference, x[:1]),
        latency_s=statistics.median(hard_t), latency_reference_s=statistics.median(ref_t),
        latency_overhead=ratio, latency_overhead_ci=_bootstrap(hard_t, ref_t, seed),
        batch=len(x), repeats=repeats, threads=threads,
    )


def _bootstrap(hard: list[float], ref: list[float], seed: int, rounds: int = 2000) -> tuple[float, float]:
    """95% percentile interval of median(hard)/median(ref) - 1, resampling the paired repeats."""
    h, r = torch.tensor(hard), torch.tensor(ref)
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(h), (rounds, len(h)), generator=generator)
    ratios = h[pick].median(1).values / r[pick].median(1).values - 1.0
    low, high = torch.quantile(ratios.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(low), float(high)

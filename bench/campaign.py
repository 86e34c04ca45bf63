"""Campaign overhead: the whole campaign (sampling, engine, storage) against the engine alone.

Neuron faults over every Conv2d of a torchvision ResNet-18 (10 classes, 3x32x32 inputs) on the
CPU. The engine-only rate is measured in the same run on the very same faults and images, by
calling ``FaultEvaluator.evaluate`` in the campaign's batches with nothing else around it. Then the
same campaign on Ray with 2 local workers. Target: campaign >= 80% of the engine-only rate, and
Ray no slower than local.

    python bench/campaign.py [--faults-per-layer 1024] [--images 128] [--batch-size 128] [--rounds 2]
                             [--threads N] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import headstrong as hs
from headstrong.campaign import plan as planning
from headstrong.campaign.runner import _fault_groups, make_evaluator


def build() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, list[str]]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(512, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return model, x, y, convs


def engine_only(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: hs.CampaignSpec,
                batch_size: int) -> tuple[float, int]:
    """Faults per second of the engine's evaluate alone, on the campaign's own faults and batches."""
    from headstrong.faults import FaultSet

    evaluator = make_evaluator(model, spec, x, y, "cpu", batch_size)
    layers = list(spec.layers)
    positions = {n: i for i, n in enumerate(hs.injectable_layers(model))}
    elements = {n: evaluator.sizes("neuron")[n] for n in layers}
    plans = planning.plan_layers(spec, layers, positions, elements, list(range(32)), lambda *a: spec.n_faults)
    work = []
    for plan in plans:  # sampling is not timed here: only the engine
        indices, bits = planning.layer_faults(spec, plan)
        for start, stop in _fault_groups(0, plan.n_faults, x.shape[0], 1, batch_size):
            first = start % x.shape[0]
            work.append((x[first:first + stop - start], y[first:first + stop - start],
                         FaultSet(spec.kind, plan.name, indices[start:stop], bits[start:stop])))
    evaluator.evaluate(*work[0])  # warm-up, as the campaign's first batch also pays it
    begin = time.perf_counter()
    done = 0
    for bx, by, faults in work:
        evaluator.evaluate(bx, by, faults)
        done += len(faults)
    return done / (time.perf_counter() - begin), done


def campaign(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: hs.CampaignSpec, batch_size: int,
             backend: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as out:
        begin = time.perf_counter()
        result = hs.run_campaign(model, (x, y), spec, "cpu", Path(out) / "run", backend=backend,
                                 batch_size=batch_size, chunk_size=4 * batch_size, progress=False)
        seconds = time.perf_counter() - begin
    return len(result.records) / seconds, len(result.records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults-per-layer", type=int, default=1024)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the local runs")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x, y, convs = build()
    x, y = x[: args.images], y[: args.images]
    spec = hs.CampaignSpec(kind="neuron", layers=tuple(convs), fmt="fp32", n_faults=args.faults_per_layer,
                           seed=0, only_correct=False)
    print(f"ResNet-18, {len(convs)} conv layers x {args.faults_per_layer} neuron faults, {args.images} images, "
          f"batch {args.batch_size}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"best of {args.rounds} alternating rounds")
    engine_rates, local_rates = [], []
    for _ in range(args.rounds):  # alternate, so a busy spell on the machine hits both alike
        engine_rates.append(engine_only(model, x, y, spec, args.batch_size)[0])
        local_rates.append(campaign(model, x, y, spec, args.batch_size, "local")[0])
    engine_rate, local_rate = max(engine_rates), max(local_rates)
    ratio = local_rate / engine_rate
    print(f"engine only : {engine_rate:9,.0f} faults/s  (rounds: {', '.join(f'{r:,.0f}' for r in engine_rates)})")
    print(f"campaign    : {local_rate:9,.0f} faults/s  (rounds: {', '.join(f'{r:,.0f}' for r in local_rates)}) "
          f"= {ratio:.0%} of engine only [target >= 80%: {'PASS' if ratio >= 0.8 else 'FAIL'}]")
    if not args.no_ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            ray_rates = [campaign(model, x, y, spec, args.batch_size, "ray")[0] for _ in range(args.rounds)]
        finally:
            ray.shutdown()
        ray_rate = max(ray_rates)
        print(f"ray, 2 local workers: {ray_rate:9,.0f} faults/s  (rounds: {', '.join(f'{r:,.0f}' for r in ray_rates)})"
              f" = {ray_rate / local_rate:.2f}x local [target >= 1.0x: {'PASS' if ray_rate >= local_rate else 'FAIL'}]")


if __name__ == "__main__":
    main()

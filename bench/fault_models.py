"""Fault-image pairs per second of every fault model on ResNet-18, against single flips.

    python bench/fault_models.py                         # CPU, fp32, 32 images of 32x32
    python bench/fault_models.py --fmt int8 --images 64 --faults 32 --threads 2

Single-site models (flip, stuck-at, multi-bit, metadata) are timed per layer, on the same four
layers as the single-flip baseline (``FaultEvaluator.evaluate_all_pairs``, the engine's own
fast path), with ``--faults`` faults each meeting every one of ``--images`` images; multi-site
and ``ber`` draw their sites across all layers. Each model is timed alternately with its
yardstick (single flips; for ``ber``, clean forward passes over the same images), ``--repeat``
times after a warm-up, so a busy machine slows both alike: figures are medians, costs the median
of the per-repeat ratios. A ``ber`` trial over all weights at p = 1e-6 should cost at most 2
clean forward passes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any, Callable, Iterator

import torch

from headstrong.engine import FaultEvaluator
from headstrong.faults import FaultSet
from headstrong.faults.models import get_fault_model

LAYERS = ["conv1", "layer2.0.conv1", "layer3.1.conv2", "fc"]


def _paired(base: Callable[[], Any], fn: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    """Median seconds of ``base`` and ``fn``, timed alternately so that a busy machine slows both
    alike, and the median of the per-repeat ratios fn / base."""
    base(), fn()
    a, b = [], []
    for _ in range(repeat):
        for fun, times in ((base, a), (fn, b)):
            start = time.perf_counter()
            fun()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b))


def build(fmt: str, n_images: int, device: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, FaultEvaluator]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_images, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (n_images,), generator=g).to(device)
    ev = FaultEvaluator(model, fmt=fmt, device=device)
    ev.profile([(x, y)])
    return model, x, y, ev


def sizes(ev: FaultEvaluator, kind: str, layers: list[str] | None = None) -> dict[str, int]:
    info = ev.layer_info.set_index("layer")
    column = "n_neurons" if kind == "neuron" else "n_weights"
    names = layers if layers is not None else [n for n in info.index if int(info.loc[n, column]) > 0]
    return {n: int(info.loc[n, column]) for n in names}


def bench(fmt: str, n_images: int, n_faults: int, repeat: int, ber: float, device: str) -> Iterator[tuple[str, str, float, str]]:
    """Rows (model, kind, pairs per second, note), as they are measured."""
    model, x, y, ev = build(fmt, n_images, device)
    fast = ev  # one evaluator for every fault model
    g = torch.Generator().manual_seed(0)
    for kind in ("neuron", "weight"):
        per_layer = {layer: sizes(ev, kind, [layer]) for layer in LAYERS}
        flips = {layer: FaultSet(kind, layer, torch.randint(0, per_layer[layer][layer], (n_faults,), generator=g),
                                 torch.randint(0, ev.fmt.bits, (n_faults,), generator=g)) for layer in LAYERS}

        def single_flips() -> None:
            for layer in LAYERS:
                ev.evaluate_all_pairs(x, y, flips[layer])

        pairs = n_faults * n_images * len(LAYERS)
        models = [("flip", {}), ("stuck-at-0", {}), ("stuck-at-1", {}), ("multi-bit", {"k": 2})]
        if ev.fmt.metadata_bits:
            models.append(("metadata", {}))
        for name, params in models:
            fm = get_fault_model(name, **params)
            edits = {layer: fm.sample(per_layer[layer], n_faults, ev.fmt, kind=kind, generator=g) for layer in LAYERS}
            base, took, ratio = _paired(single_flips, lambda: [fast.evaluate_all_pairs(x, y, edits[n]) for n in LAYERS],
                                        repeat)
            yield (fm.describe(), kind, pairs / took, f"flip: {pairs / base:,.0f} pairs/s; cost {ratio:.2f}x a flip's")
        everywhere = sizes(ev, kind)
        fm = get_fault_model("multi-site", n=4)
        edits = fm.sample(everywhere, n_faults, ev.fmt, kind=kind, generator=g)
        base, took, ratio = _paired(single_flips, lambda: fast.evaluate_all_pairs(x, y, edits), repeat)
        own = n_faults * n_images
        yield (fm.describe(), kind, own / took, f"cost {ratio * pairs / own:.2f}x a flip's per pair")
        fm = get_fault_model("ber", p=ber)
        trials = max(1, n_faults // 4)
        edits = fm.sample(everywhere, trials, ev.fmt, kind=kind, inputs=n_images, generator=g)

        def clean() -> None:
            with torch.no_grad():
                for _ in range(trials):
                    model(x)

        base, took, ratio = _paired(clean, lambda: fast.evaluate_all_pairs(x, y, edits), repeat)
        note = f"{edits.n_edits / trials:.0f} errors per trial; a trial (all {n_images} images) costs {ratio:.2f} clean forward passes"
        yield (fm.describe(), kind, trials * n_images / took, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fmt", default="fp32")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--faults", type=int, default=8, help="faults per layer (single-site models)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ber", type=float, default=1e-6, help="bit-error rate of the ber rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"\nResNet-18, {args.images} images of 32x32, {args.fmt}, on {args.device} ({where}), "
          f"torch {torch.__version__}, median of {args.repeat}\n")
    print("| model | kind | pairs/s | note |")
    print("| --- | --- | ---: | --- |")
    for name, kind, rate, note in bench(args.fmt, args.images, args.faults, args.repeat, args.ber, args.device):
        print(f"| {name} | {kind} | {rate:,.0f} | {note} |", flush=True)


if __name__ == "__main__":
    main()

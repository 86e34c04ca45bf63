"""Hardening against its cost on Fashion-MNIST: cnn-small and resnet8-w16, trained with the
recipe at the demo's size (3 epochs, 20,000 training images, lr 0.05, batch 128), fp32 neuron
faults over every injectable layer with GoldenEye's range detector OFF (a range-restricted model
is its own detector).

For each method (range, clip, ETF head, duplicate last layer, duplicate the k most vulnerable
layers, fault-aware fine-tuning, combinations) it prints the mean ΔLoss over all layers and in
the last layer with 99% intervals, the improvement ratio (unhardened / hardened) with a 99%
interval, the clean accuracy change in percentage points, and the median CPU latency overhead
of a batch, hardened against unhardened in the same run. Goal (issue 14): range restriction
>= 5x lower ΔLoss (all layers and last layer) for <= 0.3 pp accuracy and < 5% latency.

    python bench/harden.py                     # the table (about 15 minutes on a shared 2-core CPU)
    python bench/harden.py --train-only        # only train (or find) the models
    python bench/harden.py --n-faults 64 --images 128   # smaller
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import Any

import torch

import headstrong as hs
from headstrong.data import load_dataset
from headstrong.harden import HardenOptions, apply_methods, parse_methods
from headstrong.report.hardening import (
    HardeningRow,
    accuracy_change,
    cost_figure,
    improvement,
    markdown_table,
    mean_delta_loss,
    median_delta_loss,
)
from headstrong.study.demo import DEMO_TRAIN
from headstrong.train import TrainConfig, load_checkpoint, train

BACKBONES = ("cnn-small", "resnet8-w16")
HEADS = {"baseline": {"head": "baseline"}, "etf": {"head": "text", "init": "etf", "embed_dim": 64, "freeze_head": True}}


def train_config(backbone: str, head: str) -> TrainConfig:
    """The recipe at the demo's size, on one thread (the CPU is shared)."""
    return TrainConfig(dataset="fashion-mnist", backbone=backbone, seed=0, device="cpu", threads=1,
                       **DEMO_TRAIN, **HEADS[head])


def trained(root: Path, backbone: str, head: str) -> tuple[torch.nn.Module, float]:
    """Train (or find, the run resumes) one model; returns it and its test top-1 (%)."""
    result = train(train_config(backbone, head), root / "models" / f"{backbone}__{head}", progress=False)
    model, _ = load_checkpoint(result.checkpoint)
    return model.eval(), float(result.top1)


# (head, label, methods, option overrides); "etf" rows compare the ETF-head model with the
# baseline model. "range" bounds after every activation function (Ranger); "range-layers"
# after every injectable layer, the classification layer's logits included; "range+logits"
# after every activation function and on the logits.
CELLS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("baseline", "range", "range", {}),
    ("baseline", "range-layers", "range", {"where": "layers"}),
    ("baseline", "range+logits", "range", {"where": "activations+logits"}),
    ("baseline", "clip", "clip", {}),
    ("etf", "none", "none", {}),
    ("baseline", "duplicate last", "duplicate", {}),
    ("baseline", "duplicate top-3", "duplicate", {"top": 3}),
    ("baseline", "fault-aware", "fault-aware", {}),
    ("baseline", "range+duplicate last", "range+duplicate", {}),
    ("baseline", "fault-aware+range", "fault-aware+range", {}),
    ("etf", "range", "range", {}),
    ("etf", "range-layers+duplicate last", "range+duplicate", {"where": "layers"}),
)


def _tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.as_tensor(labels)


def _campaign(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], n_faults: int, out: Path) -> Any:
    spec = hs.CampaignSpec(kind="neuron", layers="all", fmt="fp32", n_faults=n_faults, range_detector=False, seed=0)
    return hs.run_campaign(model, data, spec, out=out, progress=False)


@torch.no_grad()
def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + 500]).argmax(1) == y[i:i + 500] for i in range(0, len(x), 500)])


def run(args: argparse.Namespace) -> list[HardeningRow]:
    root = Path(args.out)
    test_x, test_y = _tensors(load_dataset("fashion-mnist", "test", limit=args.test_images, seed=0))
    camp = (test_x[: args.images], test_y[: args.images])
    profile_x, _ = _tensors(load_dataset("fashion-mnist", "train", limit=args.profile_images, seed=1))
    rows = []
    for backbone in BACKBONES:
        models = {head: trained(root, backbone, head)[0] for head in HEADS}
        base = models["baseline"]
        reference = _campaign(base, camp, args.n_faults, root / "campaigns" / backbone / "baseline__none")
        ref_correct = _correct(base, test_x, test_y)
        batch = test_x[: args.latency_batch]
        for head, hardening, names, overrides in CELLS:
            began = time.perf_counter()
            methods = parse_methods(names)
            options = HardenOptions(flips=args.flips, limit_train=args.finetune_images, epochs=1, **overrides)
            hardened = apply_methods(models[head], methods, options, profile_data=profile_x,
                                     train_data="fashion-mnist", ranking=reference,
                                     out=root / "finetune" / f"{backbone}__{head}")
            label = hardening.replace(" ", "_").replace("+", "_")
            result = _campaign(hardened, camp, args.n_faults, root / "campaigns" / backbone / f"{head}__{label}")
            cost = hs.harden.measure_cost(hardened, base, batch, repeats=args.repeats)
            ref_records, records = reference.records, result.records
            correct = _correct(hardened, test_x, test_y)
            rows.append(HardeningRow(
                backbone=backbone, head=head, hardening=hardening, range_detector=False,
                top1_reference=100 * float(ref_correct.float().mean()), top1=100 * float(correct.float().mean()),
                accuracy_change_pp=accuracy_change(ref_correct.numpy(), correct.numpy()),
                improvement_all=improvement(ref_records, records),
                improvement_last=improvement(ref_records, records, ["head"]),
                delta_loss_all=mean_delta_loss(records), delta_loss_all_reference=mean_delta_loss(ref_records),
                delta_loss_last=mean_delta_loss(records, ["head"]),
                delta_loss_last_reference=mean_delta_loss(ref_records, ["head"]),
                median_delta_loss_all=median_delta_loss(records), median_delta_loss_all_reference=median_delta_loss(ref_records),
                params=cost.params, params_reference=cost.params_reference, macs=cost.macs, macs_reference=cost.macs_reference,
                latency_overhead=hs.report.hardening.Ratio(cost.latency_overhead, *cost.latency_overhead_ci, level=0.95),
            ))
            r = rows[-1]
            print(f"{backbone:12s} {head:8s} {hardening:18s} all {r.improvement_all.text()}  last {r.improvement_last.text()}  "
                  f"Δacc {r.accuracy_change_pp.value:+.2f} pp  latency {100 * cost.latency_overhead:+.1f}% "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)
    return rows


def verdicts(rows: list[HardeningRow]) -> list[str]:
    """The issue's target for range restriction, checked plainly per backbone."""
    lines = []
    for r in rows:
        if r.head != "baseline" or r.hardening not in ("range", "range-layers", "range+logits"):
            continue
        checks = [
            ("all layers >= 5x (99% interval above 5)", r.improvement_all.low >= 5, f"{r.improvement_all.text()}"),
            ("last layer >= 5x (99% interval above 5)", r.improvement_last.low >= 5, f"{r.improvement_last.text()}"),
            ("accuracy cost <= 0.3 pp", r.accuracy_change_pp.value >= -0.3,
             f"{r.accuracy_change_pp.value:+.2f} pp [{r.accuracy_change_pp.low:+.2f}, {r.accuracy_change_pp.high:+.2f}]"),
            ("latency < 5%", r.latency_overhead.value < 0.05,
             f"{100 * r.latency_overhead.value:+.1f}% [{100 * r.latency_overhead.low:+.1f}, {100 * r.latency_overhead.high:+.1f}]"),
        ]
        for name, ok, figure in checks:
            lines.append(f"- {r.backbone}, {r.hardening}, {name}: {'met' if ok else 'MISSED'} ({figure})")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_harden", help="models and campaigns (reruns reuse them)")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--n-faults", type=int, default=512, help="neuron faults per layer")
    parser.add_argument("--images", type=int, default=256, help="test images the faults are applied to")
    parser.add_argument("--test-images", type=int, default=2000, help="test images for clean accuracy")
    parser.add_argument("--profile-images", type=int, default=2000, help="training images the bounds are profiled on")
    parser.add_argument("--finetune-images", type=int, default=10000, help="training images of the 1 fine-tuning epoch")
    parser.add_argument("--flips", type=int, default=64, help="fault-aware fine-tuning: fp32 bit flips per batch of 128")
    parser.add_argument("--latency-batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30, help="latency repeats (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.out)
    for backbone in BACKBONES:
        for head in HEADS:
            began = time.perf_counter()
            _, top1 = trained(root, backbone, head)
            print(f"{backbone} {head}: top-1 {top1:.2f}% ({time.perf_counter() - began:.0f} s)", flush=True)
    if args.train_only:
        return
    began = time.perf_counter()
    rows = run(args)
    print()
    print(f"headstrong bench/harden.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{args.n_faults} fp32 neuron faults per layer on {args.images} test images, range detector OFF; "
          f"accuracy on {args.test_images} test images; latency: batch {args.latency_batch}, {args.repeats} repeats, 1 thread; "
          f"{time.perf_counter() - began:.0f} s")
    print()
    print(markdown_table(rows))
    print("\n".join(verdicts(rows)))
    figure = cost_figure(rows, root / "resilience_vs_cost.png", title="Fashion-MNIST")
    hs.report.hardening.hardening_table(rows).to_csv(root / "hardening.csv", index=False)
    print(f"\nfigure: {figure}; table: {root / 'hardening.csv'}")


if __name__ == "__main__":
    main()

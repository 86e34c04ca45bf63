"""Training speed: images per second for the baseline and the text-guided head on the same
backbone, and the head's overhead; on a GPU also the epoch time of a CIFAR-sized ResNet-18.

Synthetic inputs, the recipe's optimiser settings (SGD, Nesterov momentum, weight decay), AMP
and channels-last on CUDA. Baseline and text-guided steps are timed in alternating rounds and
the median kept, so load from other processes hits both alike.

    python bench/train.py                       # CPU: resnet8-w16 on 1x28x28, batch 128
    python bench/train.py --device cuda         # GPU: resnet18 (CIFAR stem) on 3x32x32, batch 256
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from headstrong.textguided import TextGuidedClassifier, build_baseline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _steps_per_second(model, opt, x, y, steps: int, device: torch.device, amp: bool) -> float:
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") else contextlib.nullcontext()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        with ctx:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps / (time.perf_counter() - start)


def _macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one image (a noise-free cost figure)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_out
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in handles:
            h.remove()
        model.train()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--embed-dim", type=int, default=384, help="text width D (minilm: 384, CLIP B/32: 512)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = args.backbone or ("resnet18" if gpu else "resnet8-w16")
    in_chans, size = (3, 32) if gpu else (1, 28)
    batch = args.batch_size or (256 if gpu else 128)
    steps = args.steps or (50 if gpu else 5)
    small_input = backbone.startswith("resnet") and backbone[6:].isdigit()

    torch.manual_seed(0)
    emb = F.normalize(torch.randn(args.classes, args.embed_dim), dim=1)
    models = {
        "baseline": build_baseline(backbone, args.classes, in_chans, small_input=small_input),
        "text-guided": TextGuidedClassifier(backbone, emb, in_chans, small_input=small_input),
    }
    memory = torch.channels_last if gpu else torch.preserve_format
    x = torch.randn(batch, in_chans, size, size, device=device).contiguous(memory_format=memory)
    y = torch.randint(0, args.classes, (batch,), device=device)
    opts = {}
    for name, model in models.items():
        model.to(device, memory_format=memory).train()
        opts[name] = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        _steps_per_second(model, opts[name], x, y, 2, device, amp=True)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            rates[name].append(batch * _steps_per_second(model, opts[name], x, y, steps, device, amp=True))

    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"training step, {backbone}{' (small-input stem)' if small_input else ''}, input {in_chans}x{size}x{size}, "
          f"batch {batch}, {where}; median of {args.rounds} rounds x {steps} steps")
    median = {name: statistics.median(r) for name, r in rates.items()}
    macs = {name: _macs(model, x) for name, model in models.items()}
    for name, rate in median.items():
        params = sum(p.numel() for p in models[name].parameters())
        print(f"  {name:12s} {rate:10.1f} images/s   {params:,} parameters   {macs[name] / 1e6:.2f} M MACs/image")
    print(f"  head MACs overhead: {100.0 * (macs['text-guided'] / macs['baseline'] - 1.0):+.2f}%")
    overhead = 100.0 * (median["baseline"] / median["text-guided"] - 1.0)
    print(f"  head overhead: {overhead:+.2f}% time per image (target: under 5%)")
    if gpu:
        for name, rate in median.items():
            print(f"  CIFAR-10 epoch (50,000 images), {name}: {50_000 / rate:.1f} s at this rate")


if __name__ == "__main__":
    main()

"""Flips per second of every number format on 10M-element tensors.

    python bench/formats.py                    # CPU, and CUDA too when one is available
    python bench/formats.py --device cpu --numel 1000000 --repeat 5 --threads 1

Two cases per format: one bit for the whole tensor (``flip(x, 7)``) and one bit per sample
(``flip(x, bits)`` with ``bits`` of shape [rows, 1]), the form the engine uses. Each figure is
the median of ``--repeat`` timed calls after one warm-up call; a flip here is one element's
quantise + XOR + decode, and the figure counts elements per second.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from headstrong import formats


def _time(fn, device: torch.device, repeat: int) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(
    device: torch.device, numel: int, repeat: int, names: list[str]
) -> list[tuple[str, float, float]]:
    """(format, flips/s with one bit, flips/s with a bit per row) for each format."""
    cols = 1000
    rows = numel // cols
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cols, generator=gen).to(device)
    cases = []
    for name in names:
        fmt = formats.get(name)
        if fmt.needs_scale:  # the engine passes a profiled scale; per tensor is the fallback
            cases.append((f"{name}, scale per tensor", fmt))
            cases.append((f"{name}, given scale", fmt.with_scale(float(fmt.scale_for(x)))))
        else:
            cases.append((name, fmt))
    rows_out = []
    for label, fmt in cases:
        bits = torch.randint(0, fmt.bits, (rows, 1), generator=gen).to(device)
        one = _time(lambda: fmt.flip(x, min(7, fmt.bits - 1)), device, repeat)
        per_row = _time(lambda: fmt.flip(x, bits), device, repeat)
        rows_out.append((label, x.numel() / one, x.numel() / per_row))
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu, cuda, ... (repeatable)")
    parser.add_argument("--numel", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", nargs="*", default=formats.list())
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for name in devices:
        device = torch.device(name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else (
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        )
        print(f"\n{args.numel:,} elements on {name} ({label}), torch {torch.__version__}, "
              f"median of {args.repeat}\n")
        print("| format | flips/s, one bit | flips/s, a bit per row |")
        print("| --- | ---: | ---: |")
        for fmt, one, per_row in bench(device, args.numel, args.repeat, args.formats):
            print(f"| {fmt} | {one / 1e6:,.0f} M | {per_row / 1e6:,.0f} M |")


if __name__ == "__main__":
    main()

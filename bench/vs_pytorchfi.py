"""headstrong against PyTorchFI 0.6.0, in one process, same model, inputs and device.

Counts what both do: (fault, image) evaluations.

* Neuron faults: PyTorchFI's ``random_neuron_single_bit_inj_batched`` (INT8 single-bit flips,
  one random neuron of a random Conv2d per image, one declaration per batch) against
  ``FaultEvaluator(fmt="int8")`` on the same number of faults spread over the same layers (every
  layer's output held in INT8, upstream reuse, one fault per sample).
* Last-layer weight faults: PyTorchFI's ``declare_weight_fi`` on the final Linear (one
  declaration, i.e. one model copy and one forward pass, per fault) against
  ``FaultEvaluator.evaluate_all_pairs`` (analytic: ``Δlogit_i = feature_j × Δw_ij``), both with
  fp32 single-bit flips.
* The same last-layer weight faults as a user runs them: ``hs.run_campaign(kind="weight",
  layers=["fc"], images_per_fault="all")`` on the same images, timed from the call until the
  records are stored and read back (profiling, golden pass, planning, Parquet chunks included).

Model: torchvision ResNet-18 with 10 classes.

    python bench/vs_pytorchfi.py [--batch 64] [--device cpu] [--image-size 32] [--threads N]
                                 [--pfi-batches 6] [--hs-faults 6144] [--pfi-weight-faults 6]
                                 [--hs-weight-faults 20000] [--campaign-faults 20000] [--chunk 256]
                                 [--skip-weight]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import struct
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

import headstrong as hs
from headstrong.engine import FaultEvaluator
from headstrong.faults import FaultSet, sample_neuron_faults


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flip_fp32(value: float, bit: int) -> float:
    (word,) = struct.unpack("<I", struct.pack("<f", value))
    return struct.unpack("<f", struct.pack("<I", word ^ (1 << bit)))[0]


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def bench_forward(model: nn.Module, x: torch.Tensor, rounds: int) -> float:
    with torch.no_grad():
        model(x)
        sync(x.device)
        start = time.perf_counter()
        for _ in range(rounds):
            model(x)
        sync(x.device)
    return rounds * len(x) / (time.perf_counter() - start)


def pfi_neuron(model: nn.Module, x: torch.Tensor, batches: int, ranges: list[float]) -> float:
    from pytorchfi import neuron_error_models as nem

    pfi = nem.single_bit_flip_func(model, batch_size=len(x), input_shape=list(x.shape[1:]),
                                   layer_types=[nn.Conv2d], use_cuda=x.device.type == "cuda", bits=8)
    with torch.no_grad():
        nem.random_neuron_single_bit_inj_batched(pfi, ranges)(x)  # warm-up
        sync(x.device)
        start = time.perf_counter()
        for _ in range(batches):
            corrupted = nem.random_neuron_single_bit_inj_batched(pfi, ranges)
            corrupted(x)
        sync(x.device)
    return batches * len(x) / (time.perf_counter() - start)


def hs_neuron(ev: FaultEvaluator, x: torch.Tensor, y: torch.Tensor, n_faults: int, seed: int) -> tuple[float, str]:
    g = torch.Generator().manual_seed(seed)
    info = ev.layer_info.set_index("layer")
    layers = conv_layers(ev.model)
    counts = torch.bincount(torch.randint(len(layers), (n_faults,), generator=g), minlength=len(layers))
    sets = [sample_neuron_faults({"layer": name, "output_shape": info.loc[name, "output_shape"]},
                                 int(c), 8, g) for name, c in zip(layers, counts)]
    faults = FaultSet.concat(sets)
    faults = faults.with_sample(torch.randint(len(x), (len(faults),), generator=g))
    ev.evaluate(x, y, faults[: len(x)])  # warm-up (tracing, first capture)
    sync(x.device)
    start = time.perf_counter()
    ev.evaluate(x, y, faults)
    sync(x.device)
    return len(faults) / (time.perf_counter() - start), ev.last_path or ""


def pfi_weight(model: nn.Module, x: torch.Tensor, n_faults: int) -> float:
    from pytorchfi.core import fault_injection

    pfi = fault_injection(model, batch_size=len(x), input_shape=list(x.shape[1:]), layer_types=[nn.Linear],
                          use_cuda=x.device.type == "cuda")
    fc = model.fc.weight
    rng = random.Random(0)

    def one() -> None:
        k, j, bit = rng.randrange(fc.shape[0]), rng.randrange(fc.shape[1]), rng.randrange(32)
        value = flip_fp32(float(fc[k, j]), bit)
        corrupted = pfi.declare_weight_fi(layer_num=[0], k=[k], dim1=[j], dim2=[None], dim3=[None], value=[value])
        corrupted(x)

    with torch.no_grad():
        one()
        sync(x.device)
        start = time.perf_counter()
        for _ in range(n_faults):
            one()
        sync(x.device)
    return n_faults * len(x) / (time.perf_counter() - start)


def hs_weight(ev: FaultEvaluator, x: torch.Tensor, y: torch.Tensor, n_faults: int, seed: int) -> tuple[float, str]:
    g = torch.Generator().manual_seed(seed)
    shape = tuple(ev.model.fc.weight.shape)
    from headstrong.faults import sample_weight_faults

    faults = sample_weight_faults({"layer": "fc", "weight_shape": shape}, n_faults, 32, g)
    ev.evaluate_all_pairs(x, y, faults[:16])  # warm-up
    sync(x.device)
    start = time.perf_counter()
    ev.evaluate_all_pairs(x, y, faults)
    sync(x.device)
    return n_faults * len(x) / (time.perf_counter() - start), ev.last_path or ""


def hs_campaign_weight(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_faults: int) -> tuple[float, int]:
    """Pairs per second of a whole last-layer weight campaign, from the call to the stored records."""
    spec = hs.CampaignSpec(kind="weight", layers=("fc",), fmt="fp32", n_faults=n_faults, images_per_fault="all",
                           only_correct=False, seed=0)
    with tempfile.TemporaryDirectory(prefix="hs-bench-") as tmp:
        sync(x.device)
        start = time.perf_counter()
        result = hs.run_campaign(model, (x, y), spec, device=x.device, out=Path(tmp) / "run", progress=False)
        sync(x.device)
        seconds = time.perf_counter() - start
    return len(result.records) / seconds, len(result.records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--pfi-batches", type=int, default=6, help="PyTorchFI neuron declarations (one per batch)")
    parser.add_argument("--hs-faults", type=int, default=6144, help="headstrong neuron faults")
    parser.add_argument("--pfi-weight-faults", type=int, default=6)
    parser.add_argument("--hs-weight-faults", type=int, default=20000)
    parser.add_argument("--campaign-faults", type=int, default=20000, help="faults of the run_campaign row")
    parser.add_argument("--chunk", type=int, default=256, help="headstrong faults per replayed batch")
    parser.add_argument("--skip-weight", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(device)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  device {device} ({name}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {load}, "
          f"ResNet-18/10 classes, {args.image_size}x{args.image_size}, batch {args.batch}")
    fwd = bench_forward(model, x, 5)
    print(f"plain forward pass:                    {fwd:12,.0f} images/s")

    ev = FaultEvaluator(model, fmt="int8", range_detector=False, device=device, chunk_size=args.chunk)
    ev.profile([x])
    info = ev.layer_info.set_index("layer")
    ranges = [float(info.loc[n, "out_max_abs"]) for n in conv_layers(model)]
    pfi_n = pfi_neuron(model, x, args.pfi_batches, ranges)
    print(f"PyTorchFI neuron INT8 (all convs):     {pfi_n:12,.0f} faults/s")
    hs_n, path = hs_neuron(ev, x, y, args.hs_faults, seed=1)
    print(f"headstrong neuron INT8 (all convs):    {hs_n:12,.0f} faults/s   path={path}")
    print(f"  ratio headstrong / PyTorchFI:        {hs_n / pfi_n:12.1f}x")

    if not args.skip_weight:
        ev32 = FaultEvaluator(model, fmt="fp32", device=device)
        ev32.profile([x])
        pfi_w = pfi_weight(model, x, args.pfi_weight_faults)
        print(f"PyTorchFI last-layer weight (fp32):    {pfi_w:12,.0f} fault-image pairs/s")
        hs_w, path = hs_weight(ev32, x, y, args.hs_weight_faults, seed=2)
        print(f"headstrong last-layer weight (fp32):   {hs_w:12,.0f} fault-image pairs/s   path={path}")
        print(f"  ratio headstrong / PyTorchFI:        {hs_w / pfi_w:12.0f}x")
        hs_c, pairs = hs_campaign_weight(model, x, y, args.campaign_faults)
        print(f"hs.run_campaign last layer, all images: {hs_c:11,.0f} fault-image pairs/s   ({pairs:,} records stored)")
        print(f"  ratio campaign / PyTorchFI:          {hs_c / pfi_w:12.0f}x")


if __name__ == "__main__":
    main()

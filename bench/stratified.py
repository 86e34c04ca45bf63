"""Adaptive stratified campaigns against uniform sampling: faults spent for the same interval.

Models: ``cnn-small`` and ``resnet8-w16`` trained on Fashion-MNIST with headstrong's recipe
(baseline head, small: --epochs on --train-images; cached under --out), neuron faults in every
layer, formats fp32 (range detector on, the default), bf16 and int8, evaluated on the test
images (the first --images) the golden model classifies correctly.

Per layer:

* **mean ΔLoss to +-10% (relative) at 99%**: the faults a stratified campaign (target
  "delta_loss", margin 0.1) spends, pilot included, against the faults uniform sampling needs for
  the same interval, ``(2.576 s / (0.1 mean))^2``, s^2 being the variance a uniform campaign
  sees: the population's ``sum_h W_h (s_h^2 + (mean_h - mean)^2)``, estimated from the
  stratified records (design-weighted). ``--uniform N`` also runs a uniform campaign of N faults
  per layer and gives its own estimate beside it (off by default: it costs what it measures);
* **mismatch rate to +-0.5 pp at 99%**: the faults a stratified campaign (target "mismatch",
  margin 0.005) spends against today's default sizing (Leveugle with p = 0.5 over the layer's
  elements x bits) and against uniform sampling that stops as soon as its own Wilson interval is
  that narrow, at the rate the stratified campaign measured;
* **whole campaign**: wall time of each stratified campaign over every layer, beside GoldenEye's
  protocol (102,400 faults per layer) at PyTorchFI's neuron-fault speed (``bench/vs_pytorchfi.py``'s
  ``pfi_neuron``: INT8 flips in Conv2d outputs), measured in the same run on the same images.

Rounds run exactly as a campaign plans them (``headstrong.faults.strata``: pilot, Neyman
allocation, stopping rule; fault k of a layer meets evaluation image k mod the number of images)
through the engine's ``FaultEvaluator``; estimates are ``metrics.summarize`` of the records.

    python bench/stratified.py [--models cnn-small,resnet8-w16] [--fmts fp32,bf16,int8]
                               [--images 256] [--uniform 0] [--out runs/bench-stratified]
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from headstrong.campaign.plan import stable_seed
from headstrong.data import load_dataset
from headstrong.engine import FaultEvaluator
from headstrong.faults import FaultSet, sample_neuron_faults, sample_size, strata
from headstrong.metrics import summarize
from headstrong.train import TrainConfig, load_checkpoint, train

sys.path.insert(0, str(Path(__file__).parent))
from vs_pytorchfi import pfi_neuron  # noqa: E402  (PyTorchFI's timing, as that benchmark measures it)

Z99 = 2.576
GOLDENEYE_FAULTS = 102_400


def trained(backbone: str, out: Path, epochs: int, train_images: int) -> torch.nn.Module:
    """The backbone trained with headstrong's recipe (baseline head); reused when cached."""
    folder = out / backbone
    checkpoint = folder / "model.pt"
    if not checkpoint.exists():
        config = TrainConfig(backbone=backbone, head="baseline", epochs=epochs, lr=0.05, batch_size=128,
                             limit_train=train_images, limit_test=2000, device="cpu", augment=False)
        result = train(config, folder, progress=False)
        print(f"# trained {backbone}: top-1 {result.top1:.3f} ({epochs} epoch(s), {train_images} images)", flush=True)
        checkpoint = result.checkpoint
    model, _ = load_checkpoint(checkpoint)
    return model.eval()


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("fashion-mnist", split="test", limit=n, seed=0)
    return torch.stack([data[i][0] for i in range(len(data))]), torch.tensor([data[i][1] for i in range(len(data))])


def _column(outcome: object, key: str) -> np.ndarray:
    value = outcome[key] if isinstance(outcome, dict) else getattr(outcome, key)
    return value.detach().cpu().numpy()


def evaluate(ev: FaultEvaluator, x: torch.Tensor, y: torch.Tensor, layer: str, index: torch.Tensor,
             bits: torch.Tensor, first: int, batch: int) -> pd.DataFrame:
    """Fault k (counted from ``first`` in the layer) on evaluation image k mod len(x), in batches."""
    parts = []
    k = 0
    while k < len(index):
        pos = (first + k) % len(x)
        end = min(len(index), k + min(batch, len(x) - pos))
        faults = FaultSet("neuron", layer, index[k:end], bits[k:end])
        out = ev.evaluate(x[pos : pos + end - k], y[pos : pos + end - k], faults)
        parts.append(pd.DataFrame({"layer": layer, "bit": bits[k:end].numpy(), "fault_id": np.arange(first + k, first + end),
                                   **{c: _column(out, c) for c in ("delta_loss", "golden_pred", "faulty_pred",
                                                                     "top2_diff", "nonfinite")}}))
        k = end
    return pd.concat(parts, ignore_index=True)


def stratified_layer(ev: FaultEvaluator, x: torch.Tensor, y: torch.Tensor, layer: strata.Strata,
                     rule: strata.StoppingRule, seed: int, batch: int) -> tuple[pd.Series, float, str]:
    """One layer's stratified campaign: its per-layer summary, the population's ΔLoss variance
    (what a uniform campaign's records would show, design-weighted) and how it stopped."""
    records = pd.DataFrame()
    stats = strata.StratumStats.empty(len(layer))
    for round_index in range(64):
        step = strata.allocate(rule, layer, stats)
        if step.done:
            break
        generator = torch.Generator().manual_seed(stable_seed(seed, "neuron", layer.layer, "round", round_index))
        index, bits = strata.draw_round(layer, step.counts, generator)
        part = evaluate(ev, x, y, layer.layer, index, bits, len(records), batch)
        records = pd.concat([records, part], ignore_index=True)
        stats = layer.stats(records["bit"], records["delta_loss"],
                            records["golden_pred"] != records["faulty_pred"], records["nonfinite"])
    records["stratum"] = [f"{layer.layer}/{b}" for b in records["bit"]]
    records["weight"] = 1.0 / len(layer)
    finite = records[np.isfinite(records["delta_loss"]) & ~records["nonfinite"].astype(bool)]
    per = finite.groupby("bit")["delta_loss"].agg(["mean", "var", "count"]).fillna(0.0)
    w = per["count"] / records.groupby("bit").size().loc[per.index]  # W_h x finite share; W_h = 1/bits cancels
    mean = float((w * per["mean"]).sum() / w.sum())
    variance = float((w * (per["var"] + (per["mean"] - mean) ** 2)).sum() / w.sum())
    return summarize(records, by=("layer",)).iloc[0], variance, step.status


def uniform_layer(ev: FaultEvaluator, x: torch.Tensor, y: torch.Tensor, layer: strata.Strata, n: int,
                  seed: int, batch: int) -> pd.Series:
    g = torch.Generator().manual_seed(seed)
    faults = sample_neuron_faults((layer.elements,), n, list(layer.bits), generator=g, layer=layer.layer)
    return summarize(evaluate(ev, x, y, layer.layer, faults.index, faults.bit, 0, batch), by=("layer",)).iloc[0]


def run(model_name: str, model: torch.nn.Module, fmt: str, x: torch.Tensor, y: torch.Tensor,
        args: argparse.Namespace) -> tuple[list[dict], dict]:
    ev = FaultEvaluator(model, fmt=fmt, range_detector=True)
    ev.profile([(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(x), args.batch)])
    golden = torch.cat([torch.from_numpy(_column(ev.golden(x[i : i + args.batch], y[i : i + args.batch]), "golden_pred"))
                        for i in range(0, len(x), args.batch)])
    keep = golden == y
    xe, ye = x[keep], y[keep]
    info = ev.layer_info.set_index("layer")
    bits = tuple(range(ev.fmt.bits))
    rows, times = [], {"mismatch": 0.0, "delta_loss": 0.0}
    for name in ev.layers:
        layer = strata.Strata(name, int(info.loc[name, "n_neurons"]), bits)
        results = {}
        for target, margin in (("mismatch", 0.005), ("delta_loss", 0.1)):
            rule = strata.StoppingRule(target=target, margin=margin, confidence=0.99)
            start = time.perf_counter()
            results[target] = stratified_layer(ev, xe, ye, layer, rule, args.seed, args.batch)
            times[target] += time.perf_counter() - start
        m, _, m_status = results["mismatch"]
        d, variance, d_status = results["delta_loss"]
        n_uniform_delta = math.ceil(Z99**2 * variance / (0.1 * d["delta_loss_mean"]) ** 2)
        extra = {}
        if args.uniform:
            uniform = uniform_layer(ev, xe, ye, layer, args.uniform, args.seed + 1, args.batch)
            extra = {"dl_uniform_mean": uniform["delta_loss_mean"], "dl_uniform_own_needed": math.ceil(
                (Z99 * uniform["delta_loss_std"] / (0.1 * uniform["delta_loss_mean"])) ** 2)}
        leveugle = sample_size(layer.elements * len(bits), 0.005, 0.99)
        stop = strata.wilson_sample_size(float(m["mismatch_rate"]), 0.005, 0.99)
        rows.append({
            "model": model_name, "fmt": fmt, "layer": name, "elements": layer.elements,
            "dl_mean": d["delta_loss_mean"], "dl_ci": f"{d['delta_loss_ci_low']:.3g}..{d['delta_loss_ci_high']:.3g}",
            **extra, "dl_stratified": int(d["n"]), "dl_status": d_status,
            "dl_uniform_needed": n_uniform_delta, "dl_gain": n_uniform_delta / d["n"],
            "mm_rate": m["mismatch_rate"], "mm_ci": f"{m['mismatch_ci_low']:.4f}..{m['mismatch_ci_high']:.4f}",
            "mm_stratified": int(m["n"]), "mm_status": m_status, "leveugle": leveugle, "uniform_stop": stop,
            "mm_gain_leveugle": leveugle / m["n"], "mm_gain_stop": stop / m["n"],
        })
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1, float_format="%.4g"), flush=True)
    return rows, {"model": model_name, "fmt": fmt, "layers": len(ev.layers), "eval_images": int(keep.sum()),
                  "stratified_mismatch_s": times["mismatch"], "stratified_delta_loss_s": times["delta_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn-small,resnet8-w16")
    parser.add_argument("--fmts", default="fp32,bf16,int8")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--uniform", type=int, default=0, help="faults of a uniform reference campaign per layer (0: none)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--pfi-batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench-stratified")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    print(f"# bench/stratified.py {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s); "
          f"{' '.join(sys.argv[1:])}", flush=True)
    x, y = images(args.images)
    rows, campaigns = [], []
    for model_name in args.models.split(","):
        model = trained(model_name, out, args.epochs, args.train_images)
        batch = x[: args.batch]
        ranges = [float(v) for v in _conv_ranges(model, batch)]
        pfi_rate = pfi_neuron(model, batch, args.pfi_batches, ranges)
        for fmt in args.fmts.split(","):
            got, campaign = run(model_name, model, fmt, x, y, args)
            rows += got
            campaign["goldeneye_at_pytorchfi_s"] = campaign["layers"] * GOLDENEYE_FAULTS / pfi_rate
            campaign["pytorchfi_faults_per_s"] = pfi_rate
            campaigns.append(campaign)
    table = pd.DataFrame(rows)
    print("\n## per layer\n")
    print(table.to_string(index=False, float_format="%.3g"))
    print("\n## per model and format (median gain over layers; faults summed over layers)\n")
    summary = table.groupby(["model", "fmt"], sort=False).agg(
        layers=("layer", "count"), dl_stratified=("dl_stratified", "sum"), dl_uniform=("dl_uniform_needed", "sum"),
        dl_gain_median=("dl_gain", "median"), dl_gain_min=("dl_gain", "min"),
        mm_stratified=("mm_stratified", "sum"), leveugle=("leveugle", "sum"), uniform_stop=("uniform_stop", "sum"),
        mm_gain_leveugle_min=("mm_gain_leveugle", "min"), mm_gain_stop_median=("mm_gain_stop", "median"),
    ).reset_index()
    summary["dl_gain_total"] = summary["dl_uniform"] / summary["dl_stratified"]
    summary["mm_gain_leveugle_total"] = summary["leveugle"] / summary["mm_stratified"]
    summary["mm_gain_stop_total"] = summary["uniform_stop"] / summary["mm_stratified"]
    print(summary.to_string(index=False, float_format="%.3g"))
    print("\n## whole campaign, every layer (seconds)\n")
    print(pd.DataFrame(campaigns).to_string(index=False, float_format="%.4g"))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "per_layer.csv", index=False)


def _conv_ranges(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """Max |output| of each Conv2d on ``x``: the ranges PyTorchFI's INT8 flips need."""
    peaks: list[float] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: peaks.append(float(out.abs().max())))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return peaks


if __name__ == "__main__":
    main()

"""Benchmark: samples each RA estimator needs for +-0.5% at 95% confidence, against the exact RA.

Models: the validation CNN of the tests (default) or a LeNet-5. Reference: the exact RA, by
enumerating every (layer, variable, element, bit) site through the engine (per-site accuracies
cached in --out, keyed by the weights, so a rerun skips the enumeration). From the full table
each estimator's per-sample standard deviation sigma is exact, hence n = (1.96 sigma / 0.005)^2;
repeated runs at n (drawn against the table) check that about 95% of intervals land within
+-0.5% of the exact RA. is-b pays for its pilot campaign: pilot faults x pilot images / images
full-set faults, added to its draws; its sigma and cost are the median over --pilots pilots.

    python bench/ra.py [--model tiny|lenet5] [--fmt fp16] [--images N] [--accelerator NAME|FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headstrong.data import load_dataset
from headstrong.ra import TableOracle, exact_from_table, proposal_std
from headstrong.ra import estimators as est
from headstrong.ra.api import make_oracle
from headstrong.ra.plot import convergence_plot

MARGIN, Z = 0.005, 1.959963984540054
NAMES = ("uniform", "mac", "is", "is-b")


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def tiny_cnn() -> nn.Module:
    """The validation model of tests/test_ra_validation.py (same layers, same recipe below)."""
    return nn.Sequential(
        nn.AvgPool2d(4), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(72, 10),
    )


def train(name: str = "lenet5") -> nn.Module:
    torch.manual_seed(0)  # before building: the initial weights come from this seed too
    if name == "tiny":
        model, limit, seed, steps, lr, batch = tiny_cnn(), 3000, 1, 300, 1e-2, 64
    else:
        model, limit, seed, steps, lr, batch = lenet5(), 20000, 0, 600, 2e-3, 128
    data = load_dataset("fashion-mnist", split="train", limit=limit, seed=seed)
    xs = torch.stack([data[i][0] for i in range(len(data))])
    ys = torch.tensor([data[i][1] for i in range(len(data))])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        i = torch.randint(0, len(xs), (batch,))
        loss = nn.functional.cross_entropy(model(xs[i]), ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "lenet5"), default="tiny",
                        help="tiny: the validation CNN of tests/test_ra_validation.py; lenet5: a LeNet-5")
    parser.add_argument("--fmt", default="fp16")
    parser.add_argument("--images", type=int, default=None, help="evaluation set (tiny: 200, lenet5: 50)")
    parser.add_argument("--accelerator", default=None,
                        help="preset or TOML (tiny: systolic-4x4-os, as in the test; lenet5: systolic-32x32-os)")
    parser.add_argument("--runs", type=int, default=200, help="repeated runs per estimator for the empirical check")
    parser.add_argument("--pilots", type=int, default=50, help="is-b pilot campaigns drawn (each its own seed)")
    parser.add_argument("--out", default="runs/ra-bench")
    parser.add_argument("--reference", choices=("exact", "sampled"), default="exact",
                        help="sampled: no enumeration; sigma from each estimator's own --draws draws")
    parser.add_argument("--draws", type=int, default=3000)
    args = parser.parse_args()
    args.images = args.images or (200 if args.model == "tiny" else 50)
    args.accelerator = args.accelerator or ("systolic-4x4-os" if args.model == "tiny" else "systolic-32x32-os")
    torch.set_num_threads(1)  # tiny per-fault tensors: one thread is fastest on shared cores
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = train(args.model)
    test = load_dataset("fashion-mnist", split="test", limit=args.images, seed=2)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    oracle = make_oracle(model, (x, y), args.accelerator, fmt=args.fmt)
    space, sa = oracle.space, oracle.sa
    if args.reference == "sampled":
        sampled(model, oracle, args)
        return
    digest = hashlib.sha1(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()[:10]
    pilot_images = est.get("is-b").pilot_images
    tables, seconds, source = {}, {}, {}
    for m in (args.images, min(pilot_images, args.images)):  # the whole set, and is-b's pilot subset
        cache = out / f"table-{args.fmt}-{m}of{args.images}-{args.accelerator}-{digest}.npy"  # keyed by the weights
        start = time.perf_counter()
        if cache.is_file():
            tables[m], source[m] = np.load(cache), "cached"
        else:
            tables[m], source[m] = oracle.accuracy(np.arange(space.size), images=m), "enumerated"
            np.save(cache, tables[m])
        seconds[m] = time.perf_counter() - start
    table = tables[args.images]
    exact = exact_from_table(space, table, sa)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model} ({params} parameters), {args.fmt}, {args.images} Fashion-MNIST test images, {args.accelerator}")
    print(f"sites: {space.size}; " + "; ".join(f"{m} images: {source[m]} in {seconds[m]:.0f} s" for m in tables))
    print(f"SA {sa:.4f}  exact RA {exact.ra:.4f}  software (uniform, no hardware weighting) {exact.software:.4f}")
    print(f"  software - RA = {exact.software - exact.ra:+.4f}")

    subsets = {m: (t, oracle.sa_on(m)) for m, t in tables.items() if m < args.images}
    tabled = TableOracle(space, table, sa, n_images=args.images, subsets=subsets)
    rows, plots = {}, {}
    for name in NAMES:
        # is-b's proposal depends on its pilot: sigma and cost over --pilots pilots, each its own seed
        seeds = range(args.pilots) if name == "is-b" else range(1)
        designs = []
        for seed in seeds:
            estimator = est.get(name)
            proposal = estimator.proposal(space, tabled, np.random.default_rng(seed), None)
            sigma = proposal_std(space, proposal, table, sa)
            designs.append((sigma, estimator.pilot_size(), estimator.pilot_cost(tabled)))
        sigma, pilot, cost = (float(np.median(c)) for c in zip(*designs))
        totals = np.array([np.ceil((Z * s / MARGIN) ** 2) + c for s, _, c in designs])
        n = max(1, int(np.ceil((Z * sigma / MARGIN) ** 2)))
        runs = [est.get(name).estimate(tabled, samples=n, seed=s) for s in range(args.runs)]
        within = np.mean([abs(r.ra - exact.ra) <= MARGIN for r in runs])
        tight = (Z * sigma / 0.001) ** 2 + cost
        rows[name] = dict(sigma=sigma, n=n, pilot=pilot, cost=cost, total=float(np.median(totals)),
                          p90=float(np.percentile(totals, 90)), within=within, tight=tight)
        plots[name] = est.get(name).estimate(tabled, samples=20000, seed=1)
    print(f"\n{'estimator':<9} {'sigma':>8} {'n(+-0.5%)':>10} {'pilot':>6} {'pilot cost':>11} {'total':>7}"
          f" {'total p90':>10} {'runs within +-0.5%':>19} {'total(+-0.1%)':>14}")
    for name, r in rows.items():
        print(f"{name:<9} {r['sigma']:8.4f} {r['n']:10d} {r['pilot']:6.0f} {r['cost']:11.1f} {r['total']:7.0f}"
              f" {r['p90']:10.0f} {r['within']:19.3f} {r['tight']:14.0f}")
    u, b = rows["uniform"], rows["is-b"]
    print(f"\nuniform / is-b samples: {u['n'] / b['n']:.1f}x (draws), {u['total'] / b['total']:.1f}x with the pilot's "
          f"cost (median of {args.pilots} pilots; {u['total'] / b['p90']:.1f}x at their 90th percentile); "
          f"variance ratio {u['sigma'] ** 2 / b['sigma'] ** 2:.1f}x; at +-0.1%: {u['tight'] / b['tight']:.1f}x")
    name = f"convergence-{args.model}-{args.fmt}-{args.accelerator}.png"
    figure = convergence_plot(plots, out / name, exact=exact.ra,
                              title=f"{args.model}, {args.fmt}, {args.accelerator}")
    print(f"convergence plot: {figure}")
    print(f"device: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, 1 thread")


def sampled(model: nn.Module, oracle, args: argparse.Namespace) -> None:  # noqa: ANN001
    """Without the exact table: each estimator's sigma from its own draws through the engine."""
    space, sa = oracle.space, oracle.sa
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model} ({params} parameters), {args.fmt}, {args.images} Fashion-MNIST test images, {args.accelerator}")
    print(f"sites: {space.size} (not enumerated: reference from {args.draws} draws per estimator)")
    results = {}
    for name in NAMES:
        start = time.perf_counter()
        results[name] = est.get(name).estimate(oracle, samples=args.draws, seed=1)
        r = results[name]
        print(f"  {name:<8} RA {r.ra:.4f} [{r.ci[0]:.4f}, {r.ci[1]:.4f}]  software {r.software:.4f}  "
              f"({time.perf_counter() - start:.0f} s)")
    weights = {k: 1 / max(r.std, 1e-12) ** 2 for k, r in results.items()}
    reference = sum(weights[k] * r.ra for k, r in results.items()) / sum(weights.values())
    software = results["uniform"].software
    print(f"SA {sa:.4f}  RA (inverse-variance mean of the four) {reference:.4f}  software {software:.4f}"
          f"  software - RA = {software - reference:+.4f}")
    print(f"\n{'estimator':<9} {'sigma':>8} {'n(+-0.5%)':>10} {'pilot':>6} {'pilot cost':>11} {'total':>7}")
    rows = {}
    for name, r in results.items():
        n = r.samples_for(MARGIN)
        rows[name] = (r.std, n, r.pilot, n + r.pilot_cost)
        print(f"{name:<9} {r.std:8.4f} {n:10d} {r.pilot:6d} {r.pilot_cost:11.1f} {n + r.pilot_cost:7.0f}")
    u, b = rows["uniform"], rows["is-b"]
    print(f"\nuniform / is-b samples: {u[1] / b[1]:.1f}x (draws), {u[3] / b[3]:.1f}x with the pilot's cost; "
          f"variance ratio {u[0] ** 2 / b[0] ** 2:.1f}x")
    name = f"convergence-{args.model}-{args.fmt}-{args.accelerator}-sampled.png"
    figure = convergence_plot(results, Path(args.out) / name, exact=None,
                              title=f"{args.model}, {args.fmt}, {args.accelerator}")
    print(f"convergence plot: {figure}")
    print(f"device: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, 1 thread")


if __name__ == "__main__":
    main()

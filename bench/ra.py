"""Benchmark: samples each RA estimator needs for +-0.5% at 95% confidence on a LeNet-5 CNN.

Reference: the exact RA, by enumerating every (layer, variable, element, bit) site through the
engine (the per-site accuracies are cached in --out, so a rerun skips the enumeration). From the
full table each estimator's per-sample standard deviation sigma is exact, hence
n = (1.96 sigma / 0.005)^2; repeated runs at n (drawn against the table) check that about 95%
of intervals land within +-0.5% of the exact RA. is-b's pilot campaign counts in its cost.

    python bench/ra.py [--fmt int8] [--images 50] [--accelerator systolic-32x32-os] [--out runs/ra-bench]
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
    parser.add_argument("--model", choices=("lenet5", "tiny"), default="lenet5",
                        help="tiny: the test's validation CNN (use --images 200 --accelerator FILE for its 4x4 array)")
    parser.add_argument("--fmt", default="int8")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--accelerator", default="systolic-32x32-os")
    parser.add_argument("--runs", type=int, default=200, help="repeated runs per estimator for the empirical check")
    parser.add_argument("--out", default="runs/ra-bench")
    parser.add_argument("--reference", choices=("exact", "sampled"), default="exact",
                        help="sampled: no enumeration; sigma from each estimator's own --draws draws")
    parser.add_argument("--draws", type=int, default=3000)
    args = parser.parse_args()
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
    cache = out / f"table-{args.fmt}-{args.images}-{args.accelerator}-{digest}.npy"  # keyed by the weights
    start = time.perf_counter()
    if cache.is_file():
        table = np.load(cache)
        source = f"cached {cache}"
    else:
        table = oracle.accuracy(np.arange(space.size))
        np.save(cache, table)
        source = "enumerated"
    seconds = time.perf_counter() - start
    exact = exact_from_table(space, table, sa)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model} ({params} parameters), {args.fmt}, {args.images} Fashion-MNIST test images, {args.accelerator}")
    print(f"sites: {space.size} ({source} in {seconds:.0f} s)")
    print(f"SA {sa:.4f}  exact RA {exact.ra:.4f}  software (uniform, no hardware weighting) {exact.software:.4f}")
    print(f"  software - RA = {exact.software - exact.ra:+.4f}")

    tabled = TableOracle(space, table, sa)
    rows = []
    plots = {}
    for name in NAMES:
        estimator = est.get(name)
        proposal = estimator.proposal(space, tabled, np.random.default_rng(0), None)
        pilot = estimator.pilot_size()
        sigma = proposal_std(space, proposal, table, sa)
        n = max(1, int(np.ceil((Z * sigma / MARGIN) ** 2)))
        runs = [est.get(name).estimate(tabled, samples=n, seed=s) for s in range(args.runs)]
        within = np.mean([abs(r.ra - exact.ra) <= MARGIN for r in runs])
        n_tight = max(1, int(np.ceil((Z * sigma / 0.001) ** 2)))
        rows.append((name, sigma, n, pilot, n + pilot, within, n_tight + pilot))
        plots[name] = est.get(name).estimate(tabled, samples=20000, seed=1)
    print(f"\n{'estimator':<9} {'sigma':>8} {'n(+-0.5%)':>10} {'pilot':>6} {'total':>7} {'runs within +-0.5%':>19}"
          f" {'total(+-0.1%)':>14}")
    for name, sigma, n, pilot, total, within, tight in rows:
        print(f"{name:<9} {sigma:8.4f} {n:10d} {pilot:6d} {total:7d} {within:19.3f} {tight:14d}")
    by = {r[0]: r for r in rows}
    print(f"\nuniform / is-b samples: {by['uniform'][2] / by['is-b'][2]:.1f}x (draws), "
          f"{by['uniform'][4] / by['is-b'][4]:.1f}x (pilot counted); "
          f"variance ratio {by['uniform'][1] ** 2 / by['is-b'][1] ** 2:.1f}x; "
          f"at +-0.1%: {by['uniform'][6] / by['is-b'][6]:.1f}x (pilot counted)")
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
    print(f"\n{'estimator':<9} {'sigma':>8} {'n(+-0.5%)':>10} {'pilot':>6} {'total':>7}")
    rows = {}
    for name, r in results.items():
        n = r.samples_for(MARGIN)
        rows[name] = (r.std, n, r.pilot, n + r.pilot)
        print(f"{name:<9} {r.std:8.4f} {n:10d} {r.pilot:6d} {n + r.pilot:7d}")
    u, b = rows["uniform"], rows["is-b"]
    print(f"\nuniform / is-b samples: {u[1] / b[1]:.1f}x (draws), {u[3] / b[3]:.1f}x (pilot counted); "
          f"variance ratio {u[0] ** 2 / b[0] ** 2:.1f}x")
    name = f"convergence-{args.model}-{args.fmt}-{args.accelerator}-sampled.png"
    figure = convergence_plot(results, Path(args.out) / name, exact=None,
                              title=f"{args.model}, {args.fmt}, {args.accelerator}")
    print(f"convergence plot: {figure}")
    print(f"device: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, 1 thread")


if __name__ == "__main__":
    main()

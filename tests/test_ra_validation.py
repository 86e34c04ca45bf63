"""Validation on a real model: exact RA by enumerating every site and bit through the engine,
each estimator converging to it, and the engine-backed estimate agreeing with the enumeration.

The model is a tiny CNN (about 1,100 parameters) trained here for a few hundred steps on
Fashion-MNIST; 200 test images; fp16, the format of DESIGN.md's example, so every one of the
23,152 sites runs (and again on the first 25 images, the subset is-b's pilot reads).
bench/ra.py measures the samples each estimator needs on this same model.
"""

import numpy as np
import pytest
import torch
from torch import nn

import headstrong as hs
from headstrong.data import load_dataset
from headstrong.ra import Accelerator, TableOracle, proposal_std
from headstrong.ra import estimators as est
from headstrong.ra.api import make_oracle

from _models import one_thread_module  # noqa: F401  (module-scoped fixture)

ACC = Accelerator.systolic(4, 4, "os")  # small array: layers keep most PEs busy, faults matter
N_IMAGES = 200
FMT = "fp16"
PILOT_IMAGES = 25


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.AvgPool2d(4), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(72, 10),
    )


@pytest.fixture(scope="module")
def trained(one_thread_module) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    train = load_dataset("fashion-mnist", split="train", limit=3000, seed=1)
    xs = torch.stack([train[i][0] for i in range(len(train))])
    ys = torch.tensor([train[i][1] for i in range(len(train))])
    model = _tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        i = torch.randint(0, len(xs), (64,))
        loss = nn.functional.cross_entropy(model(xs[i]), ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = load_dataset("fashion-mnist", split="test", limit=N_IMAGES, seed=2)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    return model, (x, y)


@pytest.fixture(scope="module")
def exact(trained):
    model, data = trained
    oracle = make_oracle(model, data, ACC, fmt=FMT)
    result = est.get("exact").estimate(oracle)
    table = oracle.accuracy(np.arange(oracle.space.size))
    return oracle, result, table


@pytest.fixture(scope="module")
def tabled(exact) -> TableOracle:
    """The enumeration as an oracle, with the pilot's subset enumerated too."""
    oracle, _, table = exact
    subset = oracle.accuracy(np.arange(oracle.space.size), images=PILOT_IMAGES)
    return TableOracle(oracle.space, table, oracle.sa, n_images=N_IMAGES,
                       subsets={PILOT_IMAGES: (subset, oracle.sa_on(PILOT_IMAGES))})


def test_model_is_tiny_and_learned_something(trained) -> None:
    model, (x, y) = trained
    assert sum(p.numel() for p in model.parameters()) < 2000
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.5  # ten classes: chance is 0.1


def test_exact_enumeration_covers_every_site(exact) -> None:
    oracle, result, table = exact
    assert oracle.evaluated == oracle.space.size == 23152
    assert result.n_evaluated == oracle.space.size
    assert np.all((table >= -1e-9) & (table <= 1 + 1e-9))
    # faults cost accuracy: RA below the accuracy left after control crashes alone
    ceiling = oracle.sa * (oracle.space.p_software + oracle.space.p_control * (1 - ACC.control_crash))
    assert result.ra < ceiling - 1e-3
    # the software figure ignores control crashes and idle PEs, so it sits well above RA
    assert result.software > result.ra + 0.05


def test_input_faults_match_faults_on_the_module_that_feeds_the_layer(trained, exact) -> None:
    """conv2's input is the ReLU's output: flipping it there must give the same accuracy.

    The taps hold every MAC layer's input in the format; holding the modules that produce
    those inputs (pool, ReLUs) makes the plain model's golden run the same.
    """
    model, (x, y) = trained
    oracle, _, table = exact
    ids = _every_kth_site(oracle.space, "3", "input", 37)
    ev = hs.engine.FaultEvaluator(model, fmt=FMT, range_detector=False, layers=["0", "2", "4"])
    ev.profile([x])
    assert np.allclose(table[ids], _direct_accuracy(ev, x, y, "neuron", "2", oracle.space, ids))


def test_engine_backed_estimate_agrees_with_the_enumeration(trained, exact, tabled) -> None:
    model, data = trained
    oracle, result, table = exact
    fresh = hs.ra.estimate(model, data, accelerator=ACC, fmt=FMT, estimator="is-b", samples=400, seed=3)
    sites = fresh.records["site"].to_numpy()
    assert np.allclose(fresh.records["accuracy"].to_numpy(), table[sites])  # same A(j), measured anew
    assert fresh.sa == pytest.approx(oracle.sa)
    assert fresh.ci[0] - 0.01 <= result.ra <= fresh.ci[1] + 0.01
    assert 0 < fresh.pilot <= 16 * 16 and fresh.harm is not None and len(fresh.harm) == 16
    assert fresh.pilot_cost == pytest.approx(fresh.pilot * PILOT_IMAGES / N_IMAGES)
    # the engine's pilot read the same subset accuracies as the enumeration of the first 25 images
    replay = est.get("is-b")
    replay.proposal(tabled.space, tabled, np.random.default_rng(3), None)
    assert np.allclose(replay.harm_, fresh.harm)


def test_subset_accuracy_is_the_accuracy_on_the_first_images(trained, exact) -> None:
    model, (x, y) = trained
    oracle, _, _ = exact
    ids = _every_kth_site(oracle.space, "3", "weight", 97)
    ev = hs.engine.FaultEvaluator(model, fmt=FMT, range_detector=False)
    ev.profile([x])  # as the oracle does: on the whole set
    x, y = x[:PILOT_IMAGES], y[:PILOT_IMAGES]
    assert np.allclose(oracle.accuracy(ids, images=PILOT_IMAGES), _direct_accuracy(ev, x, y, "weight", "3", oracle.space, ids))
    golden = ev.golden(x, y, kind="neuron").golden_pred
    assert oracle.sa_on(PILOT_IMAGES) == pytest.approx((golden == y).float().mean().item())


def _every_kth_site(space, layer: str, kind: str, k: int) -> np.ndarray:
    g = int(np.flatnonzero((space.layer == layer) & (space.type == kind))[0])
    return space.offset[g] + np.arange(0, space.n[g] * space.bits, k)


def _direct_accuracy(ev, x, y, kind: str, module: str, space, ids) -> np.ndarray:
    """The accuracy under each site's fault, straight from the engine, without the oracle."""
    _, element, bit = space.decode(ids)
    out = ev.evaluate_all_pairs(x, y, hs.FaultSet(kind, module, torch.as_tensor(element), torch.as_tensor(bit)))
    return (out.faulty_pred == y).float().mean(1).double().numpy()


@pytest.mark.parametrize("name", ["uniform", "mac", "is", "is-b"])
def test_each_estimator_converges_to_the_exact_ra(exact, tabled, name: str) -> None:
    _, result, _ = exact
    truth = result.ra
    runs = [est.get(name).estimate(tabled, samples=3000, seed=s) for s in range(60)]
    traces = np.stack([r.trace for r in runs])
    rmse_early = np.sqrt(np.mean((traces[:, 99] - truth) ** 2))
    rmse_late = np.sqrt(np.mean((traces[:, -1] - truth) ** 2))
    assert rmse_late < rmse_early / 3  # 30x the samples: error shrinks about sqrt(30) = 5.5x
    assert abs(np.mean(traces[:, -1]) - truth) < 4 * rmse_late / np.sqrt(len(runs)) + 1e-4
    covered = np.mean([r.ci[0] <= truth <= r.ci[1] for r in runs])
    assert covered >= 0.85
    softwares = np.array([r.software for r in runs])
    assert abs(softwares.mean() - result.software) < 4 * softwares.std() / np.sqrt(len(runs)) + 1e-4


def test_is_b_needs_the_fewest_samples_with_its_pilot_paid_for(exact, tabled) -> None:
    """What bench/ra.py measures, at one pilot: is-b's draws plus its pilot against the others' draws."""
    oracle, _, table = exact
    space, sa = oracle.space, oracle.sa
    cost = {}
    for name in ("uniform", "mac", "is", "is-b"):
        estimator = est.get(name)
        sigma = proposal_std(space, estimator.proposal(space, tabled, np.random.default_rng(0), None), table, sa)
        cost[name] = (1.96 * sigma / 0.005) ** 2 + estimator.pilot_cost(tabled)
    assert cost["is-b"] < cost["is"] < cost["uniform"]
    assert cost["uniform"] > 5 * cost["is-b"]  # the bench measures 15-18x over 50 pilots

"""Selective redundancy: what injection corrects (transient neuron faults) and what it does not
(weight faults in shared weights), exactly as the docstring promises."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch

import headstrong as hs
from headstrong.train import load_checkpoint, save_checkpoint

from _harden import campaign_and_exact_losses
from _models import images, one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return hs.build_baseline("cnn-small", 10, 3).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return images(6, seed=1)[0]


NEURON = {"kind": "neuron", "layer": "head", "index": 4, "bit": 30}
WEIGHT = {"kind": "weight", "layer": "head", "index": 9, "bit": 30}
CONV_NEURON = {"kind": "neuron", "layer": "backbone.stage2.0", "index": 111, "bit": 30}


def _inject(model: torch.nn.Module, x: torch.Tensor, record: dict) -> torch.Tensor:
    return hs.inject(model, x, hs.FaultSet.from_records([record]), range_detector=False)[0]


@pytest.mark.parametrize("mode", ["dmr", "tmr"])
def test_neuron_fault_in_a_copy_is_corrected(model: torch.nn.Module, x: torch.Tensor, mode: str) -> None:
    dup = hs.harden.duplicate(model, ["head", "backbone.stage2.0"], mode=mode)
    golden = model(x)
    assert torch.equal(dup(x), golden)
    assert hs.injectable_layers(dup) == hs.injectable_layers(model)
    for record in (NEURON, CONV_NEURON):
        assert not torch.equal(_inject(model, x, record), golden)  # the fault matters...
        assert torch.equal(_inject(dup, x, record), golden)  # ...and redundancy removes it


def test_weight_fault_in_shared_weights_is_not_corrected(model: torch.nn.Module, x: torch.Tensor) -> None:
    plain = _inject(model, x, WEIGHT)
    for mode in ("dmr", "tmr"):
        dup = hs.harden.duplicate(model, ["head"], mode=mode)
        assert torch.equal(_inject(dup, x, WEIGHT), plain)


def test_separate_weights(model: torch.nn.Module, x: torch.Tensor) -> None:
    golden, plain = model(x), _inject(model, x, WEIGHT)
    tmr = hs.harden.duplicate(model, ["head"], mode="tmr", separate_weights=True)
    assert torch.equal(_inject(tmr, x, WEIGHT), golden)  # outvoted
    dmr = hs.harden.duplicate(model, ["head"], mode="dmr", separate_weights=True)
    assert torch.equal(_inject(dmr, x, WEIGHT), plain)  # detected, but a permanent fault recomputes wrong
    assert sum(p.numel() for p in tmr.parameters()) == sum(p.numel() for p in model.parameters())
    assert sum(b.numel() for b in tmr.buffers()) > sum(b.numel() for b in model.buffers())


@dataclass
class _Ranked:
    per_layer: pd.DataFrame


def test_top_k_from_a_ranking(model: torch.nn.Module, x: torch.Tensor) -> None:
    ranking = _Ranked(pd.DataFrame({"layer": ["backbone.stage1.0", "head", "backbone.stage3.3"],
                                    "delta_loss_mean": [0.1, 3.0, 0.7]}))
    dup = hs.harden.duplicate(model, ranking, top=2)
    assert dup.hardening[-1]["layers"] == ["head", "backbone.stage3.3"]
    assert torch.equal(dup(x), model(x))


def test_composes_and_round_trips(tmp_path, model: torch.nn.Module, x: torch.Tensor) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hard = hs.harden.duplicate(hs.harden.range_restrict(model, x), ["head"], mode="tmr", separate_weights=True)
    assert [step["method"] for step in hard.hardening] == ["range", "duplicate"]
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "dup.pt", hard))
    assert torch.equal(loaded(x), hard(x))
    assert torch.equal(_inject(loaded, x, NEURON), model(x))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bad_input(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="dmr, tmr"):
        hs.harden.duplicate(model, ["head"], mode="qmr")
    with pytest.raises(ValueError, match="not injectable layers; layers of this model"):
        hs.harden.duplicate(model, ["backbone.pool"])
    with pytest.raises(ValueError, match="already duplicated"):
        hs.harden.duplicate(hs.harden.duplicate(model, "head"), ["head"])
    with pytest.raises(ValueError, match="positive integer"):
        hs.harden.duplicate(model, _Ranked(pd.DataFrame({"layer": ["head"], "delta_loss_mean": [1.0]})), top=0)


def test_campaign_on_duplicated_model_matches_exact_injection(tmp_path, model: torch.nn.Module, x: torch.Tensor) -> None:
    dup = hs.harden.duplicate(model, ["head", "backbone.stage2.0"], mode="dmr")
    labels = model(x).argmax(1)
    fast, exact, records = campaign_and_exact_losses(dup, x, labels, tmp_path / "run", n_faults=8)
    torch.testing.assert_close(fast, exact, rtol=1e-4, atol=1e-5, equal_nan=True)
    # every fault in a duplicated layer is corrected: its faulty loss is the golden loss
    golden = torch.nn.functional.cross_entropy(model(x), labels, reduction="none").detach()
    duplicated = torch.as_tensor(records["layer"].isin(["head", "backbone.stage2.0"]).to_numpy().copy())
    assert int(duplicated.sum()) == 16
    sample = torch.as_tensor(records["sample"].to_numpy().copy())
    assert torch.equal(fast[duplicated], golden[sample][duplicated])


@pytest.mark.parametrize("mode,separate", [("dmr", False), ("tmr", True)])
def test_weight_campaign_on_duplicated_layer_matches_exact_injection(tmp_path, model: torch.nn.Module,
                                                                      x: torch.Tensor, mode: str, separate: bool) -> None:
    """The campaign engine's fast weight paths change a layer's output, which a duplicate would
    take for a transient fault; on a duplicated layer weight faults must run with the edited
    weights through the whole model, as the exact injection does."""
    dup = hs.harden.duplicate(model, ["head"], mode=mode, separate_weights=separate)
    labels = model(x).argmax(1)
    spec = hs.CampaignSpec(kind="weight", layers=["head"], fmt="fp32", n_faults=12, range_detector=False,
                           seed=3, only_correct=False, bits=[30], images_per_fault="all")
    records = hs.run_campaign(dup, (x, labels), spec, out=tmp_path / "w", progress=False).records
    faults = hs.FaultSet.from_records([{"kind": "weight", "layer": "head", "index": int(r.index), "bit": int(r.bit)}
                                       for r in records.itertuples()])
    exact = hs.inject(dup, x, faults, range_detector=False)  # [records, images, classes]
    sample = torch.as_tensor(records["sample"].to_numpy().copy())
    loss = torch.nn.functional.cross_entropy(exact[torch.arange(len(records)), sample], labels[sample], reduction="none")
    fast = torch.as_tensor(records["faulty_loss"].to_numpy().copy(), dtype=loss.dtype)
    torch.testing.assert_close(fast, loss.detach(), rtol=1e-4, atol=1e-5, equal_nan=True)
    golden = torch.nn.functional.cross_entropy(model(x), labels, reduction="none").detach()[sample]
    if separate:  # TMR with its own weights outvotes a fault in the original's weights
        assert torch.equal(fast, golden)
    else:  # the same wrong weights in both copies: DMR cannot see it
        assert bool((fast != golden).any())

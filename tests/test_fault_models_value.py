"""Value faults as PyTorchFI has them (zero, a random value in a range, a function of the old value),
exact and in campaigns, against the literal deep-copy injector; register_fault_model for users."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import headstrong as hs
from _reference import assert_logits_match, reference_value_inject
from headstrong.faults import get_fault_model, list_fault_models, register_fault_model
from headstrong.faults.value_models import RandomValue, ValueFunction, Zero, mask_values
from test_campaign_resume import one_thread, tiny_data, tiny_model  # noqa: F401  (autouse fixture)


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_data(tiny_model(), n)


SIZES = {"neuron": {"0": 4 * 64, "2": 6 * 64, "6": 5}, "weight": {"0": 36, "2": 216, "6": 120}}


def _flip_half(old: torch.Tensor) -> torch.Tensor:
    return old * -0.5 + 3.0


@pytest.mark.parametrize("fmt", ["fp32", "int8", "bf16"])
@pytest.mark.parametrize("kind", ["neuron", "weight"])
@pytest.mark.parametrize("make", [Zero, lambda: RandomValue(-4.0, 4.0), lambda: ValueFunction(_flip_half, "halve")],
                         ids=["zero", "random-value", "function"])
def test_exact_inject_equals_the_literal_reference(fmt: str, kind: str, make) -> None:
    model, (x, _) = tiny_model(), _data(3)
    fm = make()
    edits = fm.sample(SIZES[kind], 6, fmt, kind=kind, generator=torch.Generator().manual_seed(2))
    records = [{"kind": kind, "layer": layer, "index": int(i), "value": float(v)}
               for layer, i, v in zip(edits.layer, edits.index, mask_values(edits.mask))]
    for detector in (True, False):
        got = hs.inject(model, x, edits, fmt=fmt, range_detector=detector and kind == "neuron")
        want = reference_value_inject(model, x, records, fmt, detector and kind == "neuron", fm.value_fn)
        assert_logits_match(got, want, rtol=1e-5)


def test_zero_changes_the_output_and_random_values_lie_in_their_range() -> None:
    model, (x, _) = tiny_model(), _data(2)
    golden = model(x)
    edits = Zero().sample({"6": 5}, 5, "fp32", kind="neuron", generator=torch.Generator().manual_seed(0))
    logits = hs.inject(model, x, edits, range_detector=False)
    for f, index in enumerate(edits.index.tolist()):
        expected = golden.clone()
        expected[:, index] = 0.0
        torch.testing.assert_close(logits[f], expected)
    drawn = mask_values(RandomValue(2.0, 3.0).sample({"6": 120}, 500, "fp32", kind="weight").mask)
    assert 2.0 <= float(drawn.min()) and float(drawn.max()) <= 3.0 and float(drawn.std()) > 0.2


def test_sites_given_to_inject_take_the_named_model() -> None:
    model, (x, _) = tiny_model(), _data(2)
    sites = [{"kind": "weight", "layer": "6", "index": 7, "bit": 0}, {"kind": "neuron", "layer": "2", "index": 100, "bit": 3}]
    for name in ("zero", "random-value"):
        got = hs.inject(model, x, sites[:1], fault_model=name)
        value = 0.0 if name == "zero" else float(mask_values(RandomValue().from_sites(hs.FaultSet.from_records(sites[:1]), "fp32").mask)[0])
        want = reference_value_inject(model, x, [{**sites[0], "value": value}], "fp32")
        assert_logits_match(got, want, rtol=1e-6)
    got = hs.inject(model, x, sites[1:], fault_model="zero", range_detector=False)
    assert_logits_match(got, reference_value_inject(model, x, [{**sites[1], "value": 0.0}], "fp32", False), rtol=1e-6)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault models a test registers vanish after it (the registry is process-wide)."""
    from headstrong._registry import Registry
    from headstrong.faults import models

    scratch: Registry = Registry("fault model")
    for name, builder in models._MODELS.items():
        scratch.add(name, builder)
    monkeypatch.setattr(models, "_MODELS", scratch)


def test_a_registered_user_function_runs_exactly_and_in_campaigns(tmp_path: Path, scratch_registry: None) -> None:
    name = "negate-plus-one"
    register_fault_model(name)(lambda: ValueFunction(lambda old: 1.0 - old, name=name))
    assert name in list_fault_models()
    with pytest.raises(ValueError, match="already registered"):
        register_fault_model(name)(lambda: Zero())
    model, (x, y) = tiny_model(), _data(8)
    spec = hs.CampaignSpec(kind="weight", layers=("0", "6"), fmt="int8", n_faults=12, seed=3, only_correct=False,
                           fault_model=name)
    result = hs.run_campaign(model, (x, y), spec, "cpu", tmp_path / "r", progress=False, batch_size=4, chunk_size=8)
    _check_records_against_reference(model, x, y, result.records, "int8", get_fault_model(name).value_fn)


@pytest.mark.parametrize("kind", ["neuron", "weight"])
def test_zero_campaign_records_equal_the_reference(tmp_path: Path, kind: str) -> None:
    model, (x, y) = tiny_model(), _data(8)
    spec = hs.CampaignSpec(kind=kind, layers=("2", "6"), fmt="fp16", n_faults=12, seed=1, only_correct=False,
                           fault_model="zero")
    result = hs.run_campaign(model, (x, y), spec, "cpu", tmp_path / "r", progress=False, batch_size=4, chunk_size=8)
    assert result.manifest["spec"]["fault_model"] == "zero"
    _check_records_against_reference(model, x, y, result.records, "fp16", None)


def _check_records_against_reference(model, x, y, records, fmt: str, value_fn) -> None:
    """Each stored record is the literal injector's outcome for its (site, image)."""
    assert len(records) > 0
    for _, row in records.iloc[::3].iterrows():
        i = int(row["sample"])
        rec = {"kind": row["kind"], "layer": row["layer"], "index": int(row["index"]), "value": 0.0}
        logits = reference_value_inject(model, x[[i]], [rec], fmt, bool(row["kind"] == "neuron"), value_fn)[0, 0]
        assert int(logits.argmax()) == int(row["faulty_pred"])
        loss = torch.nn.functional.cross_entropy(logits[None], y[[i]])
        assert float(loss) == pytest.approx(float(row["faulty_loss"]), rel=1e-4, abs=1e-5)


def test_random_value_campaigns_are_deterministic_and_resume(tmp_path: Path) -> None:
    model, (x, y) = tiny_model(), _data(8)
    spec = hs.CampaignSpec(kind="neuron", layers=("0", "2"), n_faults=16, seed=4, only_correct=False,
                           fault_model="random-value")
    run = lambda out: hs.run_campaign(model, (x, y), spec, "cpu", out, progress=False, batch_size=4, chunk_size=8)  # noqa: E731
    first, again = run(tmp_path / "a"), run(tmp_path / "b")
    assert first.records.equals(again.records)
    sorted((tmp_path / "a" / "chunks").glob("*.parquet"))[-1].unlink()
    assert run(tmp_path / "a").records.equals(first.records)
    assert not first.records["masked"].all()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: get_fault_model("random-value", low=1.0, high=1.0), "low must be below high"),
    (lambda: get_fault_model("random-value", low=float("nan")), "low must be a finite number"),
    (lambda: get_fault_model("zero", low=0.0), "fault model 'zero' takes no parameters"),
    (lambda: ValueFunction(3.0), "needs a callable"),
    (lambda: Zero().sample({"6": 5}, 2, "bfp8_16"), "blocks that share an exponent"),
    (lambda: Zero().sample({"6": 5}, 2, "fp32", bits=[3]), "replace the whole value, not bits"),
])
def test_bad_value_models_are_refused(make, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_function_edits_that_lost_their_function_fail_loudly() -> None:
    from headstrong.engine.edits import edited_elements
    from headstrong.faults.models import OPS

    edits = ValueFunction(lambda old: old + 1).sample({"6": 120}, 3, "fp32", kind="weight")
    weight = tiny_model()[6].weight.detach()
    op = torch.full((3,), OPS.index("value"))
    with pytest.raises(ValueError, match="without its function"):
        edited_elements(weight, hs.formats.get("fp32"), edits.index, op, edits.mask)
    new, hit = edited_elements(weight, hs.formats.get("fp32"), edits.index, op, edits.mask, edits.value_fn)
    torch.testing.assert_close(new, weight.reshape(-1)[edits.index] + 1)
    assert bool(hit.all())

"""What a campaign evaluates: its own golden model's correct images, every image a permanent
fault meets (images_per_fault), and refusals where results would mean nothing (issues 12, 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import headstrong as hs
from _models import one_thread  # noqa: F401  (autouse fixture)
from test_campaign_resume import tiny_data, tiny_model

LAYOUT = {"batch_size": 8, "chunk_size": 16}


def _run(model: torch.nn.Module, data: object, spec: hs.CampaignSpec, out: Path | None = None) -> hs.campaign.CampaignResult:
    return hs.run_campaign(model, data, spec, "cpu", out, progress=False, **LAYOUT)


def coarse_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier with one huge weight on a pixel that is always 0: it changes nothing in
    fp32, but held in int8 (scale = max|w| / 127) the other weights round to a few levels, so the
    int8-weight model gets most images wrong that the fp32 model gets right (its labels)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)).eval()
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:, 0, 0, 0] = 0
    with torch.no_grad():
        model[1].weight[0, 0] = 40.0
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize(("kind", "fault_model"), [("weight", "flip"), ("weight", "stuck-at-1"), ("neuron", "flip")])
def test_only_correct_means_correct_for_the_campaigns_own_golden_model(kind: str, fault_model: str) -> None:
    model, x, y = coarse_model()
    spec = hs.CampaignSpec(kind=kind, layers="1", fmt="int8", n_faults=12, seed=0, fault_model=fault_model,
                           images_per_fault=1, range_detector=False)
    records = _run(model, (x, y), spec).records
    if kind == "weight":  # the golden model of a weight campaign holds the weights in int8
        w = model[1].weight.detach()
        held = hs.formats.get("int8", scale=float(w.abs().max()) / 127).quantize(w)
        wrong = (F.linear(x.flatten(1), held, model[1].bias).argmax(1) != y).nonzero().flatten().tolist()
        assert len(wrong) > 20, "the example must make the int8-weight model wrong on many images"
        assert not set(records["sample"]) & set(wrong)
    assert (records["label"] == records["golden_pred"]).all()


def test_nonfinite_golden_outputs_are_an_error_naming_how_many_images() -> None:
    model = tiny_model()
    x, y = tiny_data(model)
    with torch.no_grad():
        model[6].bias[2] = float("nan")  # every image's logits hold a NaN
    for fmt, kind in (("fp32", "neuron"), ("bf16", "neuron"), ("fp16", "weight")):  # formats that hold NaN
        spec = hs.CampaignSpec(kind=kind, fmt=fmt, n_faults=4, only_correct=False)
        with pytest.raises(ValueError, match=r"non-finite logits \(NaN or Inf\) on 40 of 40 images"):
            _run(model, (x, y), spec)


def test_uint8_images_are_refused_as_inject_refuses_them(tmp_path: Path) -> None:
    model = tiny_model()
    x, y = tiny_data(model)
    raw = (x.clamp(-1, 1) * 127 + 128).to(torch.uint8)
    with pytest.raises(ValueError, match="dtype torch.uint8; images must be a floating tensor"):
        hs.inject(model, raw, [{"kind": "neuron", "layer": "0", "index": 0, "bit": 3}])
    with pytest.raises(ValueError, match="dtype torch.uint8; images must be a floating tensor"):
        _run(model, (raw, y), hs.CampaignSpec(n_faults=2), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_default_images_per_fault_follows_the_faults_permanence() -> None:
    model = tiny_model()
    data = tiny_data(model)
    n_eval = 20  # only_correct: the even images
    cases = [("neuron", "flip", 1), ("weight", "flip", n_eval), ("neuron", "stuck-at-0", n_eval),
             ("weight", "multi-bit", n_eval)]
    for kind, fault_model, per_fault in cases:
        spec = hs.CampaignSpec(kind=kind, layers="6", n_faults=3, seed=1, fault_model=fault_model,
                               **({"k": 2} if fault_model == "multi-bit" else {}))
        result = _run(model, data, spec)
        assert result.manifest["images_per_fault"] == per_fault, (kind, fault_model)
        counts = result.records.groupby("fault_id")["sample"].nunique()
        assert counts.tolist() == [per_fault] * 3, (kind, fault_model)


def test_each_fault_meets_its_images_and_every_pair_equals_inject() -> None:
    model = tiny_model()
    x, y = tiny_data(model)
    for layers, per_fault in (("6", "all"), (("0", "2"), 3)):
        spec = hs.CampaignSpec(kind="weight", layers=layers, n_faults=10, seed=3, bits="exponent",
                               only_correct=False, range_detector=False, images_per_fault=per_fault)
        records = _run(model, (x, y), spec).records
        n = 40 if per_fault == "all" else per_fault
        assert len(records) == 10 * n * (1 if per_fault == "all" else 2)
        first = records[records["fault_id"] == records["fault_id"].iloc[0]]
        assert first["sample"].tolist() == list(range(n))  # pair p meets eval image p mod n_eval
        faults = hs.FaultSet(list(records["kind"]), list(records["layer"]), torch.tensor(records["index"].to_numpy()),
                             torch.tensor(records["bit"].to_numpy().astype("int64")))
        rows = torch.arange(0, len(records), 7)
        for i in rows.tolist():
            logits = hs.inject(model, x[[int(records["sample"].iloc[i])]], faults[i : i + 1], range_detector=False)[0, 0]
            if torch.isfinite(logits).all():
                assert int(logits.argmax()) == int(records["faulty_pred"].iloc[i])
                label = y[[int(records["sample"].iloc[i])]]
                loss = float(F.cross_entropy(logits[None], label))
                assert loss == pytest.approx(float(records["faulty_loss"].iloc[i]), rel=1e-4, abs=1e-5)


def test_a_bit_error_trial_is_one_fault_on_all_its_images() -> None:
    model = tiny_model()
    spec = hs.CampaignSpec(kind="weight", layers="2", n_faults=6, seed=2, fault_model="ber", ber=0.002,
                           only_correct=False, images_per_fault=5)
    records = _run(model, tiny_data(model), spec).records
    per_fault = records.groupby("fault_id")["masked"].nunique()
    assert (per_fault == 1).all()  # a trial either drew (and changed) something for all its images, or not
    assert not records["masked"].all()


def test_images_per_fault_is_checked() -> None:
    for bad in (0, -2, "some", 1.5, True):
        with pytest.raises(ValueError, match="images_per_fault must be a positive integer, 'all' or None"):
            hs.CampaignSpec(images_per_fault=bad)
    model = tiny_model()
    with pytest.raises(ValueError, match="images_per_fault=50 but the campaign has only 20 evaluation images"):
        _run(model, tiny_data(model), hs.CampaignSpec(n_faults=2, images_per_fault=50))
    assert hs.CampaignSpec.from_dict(hs.CampaignSpec(images_per_fault="all").to_dict()).images_per_fault == "all"


def test_cli_images_per_fault_option_reaches_the_spec() -> None:
    from headstrong.cli.inject import build_spec, parse_images_per_fault

    assert build_spec(None, {"kind": "weight", "images_per_fault": parse_images_per_fault("all")}).images_per_fault == "all"
    assert build_spec(None, {"images_per_fault": parse_images_per_fault("16")}).images_per_fault == 16
    assert parse_images_per_fault(None) is None
    with pytest.raises(ValueError, match="--images-per-fault 'many' is not understood; give all or a positive number"):
        parse_images_per_fault("many")
    with pytest.raises(ValueError, match="images_per_fault must be a positive integer"):
        build_spec(None, {"images_per_fault": parse_images_per_fault("0")})

"""Campaigns end to end on the real engine: records, sizing, determinism, bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import headstrong as hs
from headstrong.campaign.runner import RECORD_COLUMNS
from headstrong.faults import sample_size
from test_campaign_resume import one_thread, tiny_data, tiny_model  # noqa: F401  (one_thread: autouse fixture)


def _run(out: Path | None, spec: hs.CampaignSpec, **kw: object) -> hs.campaign.CampaignResult:
    model = tiny_model()
    kw.setdefault("batch_size", 8)
    kw.setdefault("chunk_size", 16)
    return hs.run_campaign(model, tiny_data(model), spec, "cpu", out, progress=False, **kw)


def test_records_have_the_contract_columns_counts_and_layer_order(tmp_path: Path) -> None:
    spec = hs.CampaignSpec(kind="neuron", n_faults=30, seed=1)
    result = _run(tmp_path / "r", spec)
    records = result.records
    assert list(records.columns) == list(RECORD_COLUMNS)
    layers = hs.injectable_layers(tiny_model())
    assert result.layers == layers
    assert records.groupby("layer").size().to_dict() == {name: 30 for name in layers}
    assert records["fault_id"].tolist() == list(range(30 * len(layers)))
    assert list(result.per_layer["layer"]) == layers
    assert set(result.per_bit["bit"]) <= set(range(32))
    # only_correct: the images faults land on are those the model gets right (the even ones)
    assert set(records["sample"]) == set(range(0, 40, 2))
    assert (records["golden_pred"] == records["label"]).all()


def test_records_agree_with_the_literal_injector(tmp_path: Path) -> None:
    spec = hs.CampaignSpec(kind="weight", layers=("0", "6"), bits="exponent", n_faults=12, seed=2,
                           only_correct=False, range_detector=False)
    result = _run(tmp_path / "r", spec)
    model = tiny_model()
    x, y = tiny_data(model)
    rows = result.records.iloc[::5]
    faults = hs.FaultSet(list(rows["kind"]), list(rows["layer"]), torch.tensor(rows["index"].to_numpy()),
                         torch.tensor(rows["bit"].to_numpy().astype("int64")))
    assert set(rows["bit"]) <= set(range(23, 31))
    for i, (_, row) in enumerate(rows.iterrows()):
        logits = hs.inject(model, x[[int(row["sample"])]], faults[i : i + 1], fmt="fp32", range_detector=False)
        faulty = logits[0, 0]
        if torch.isfinite(faulty).all():
            assert int(faulty.argmax()) == int(row["faulty_pred"])
            loss = torch.nn.functional.cross_entropy(faulty[None], y[[int(row["sample"])]])
            assert float(loss) == pytest.approx(float(row["faulty_loss"]), rel=1e-4, abs=1e-5)


def test_leveugle_sizes_each_layer_and_each_bit(tmp_path: Path) -> None:
    spec = hs.CampaignSpec(kind="weight", layers="6", bits="sign", margin=0.2, confidence=0.9, seed=0,
                           sampling="uniform")  # sized by margin, stratified unless asked
    result = _run(tmp_path / "a", spec)  # Leveugle counts faults; a weight fault meets every eval image
    assert result.records["fault_id"].nunique() == sample_size(24 * 5 * 1, 0.2, 0.9)
    assert len(result.records) == sample_size(24 * 5 * 1, 0.2, 0.9) * result.manifest["n_eval_images"]
    per_bit = _run(tmp_path / "b", spec.replace(bits=[0, 31], per_bit=True))
    faults = per_bit.records.groupby("bit")["fault_id"].nunique().to_dict()
    assert faults == {0: sample_size(120, 0.2, 0.9), 31: sample_size(120, 0.2, 0.9)}


def test_same_seed_same_faults_whatever_the_batching(tmp_path: Path) -> None:
    spec = hs.CampaignSpec(kind="neuron", n_faults=50, seed=7)
    a = _run(tmp_path / "a", spec, batch_size=8, chunk_size=16)
    b = _run(None, spec, batch_size=5, chunk_size=33)
    keys = ["fault_id", "layer", "index", "bit", "sample", "golden_pred"]
    pd.testing.assert_frame_equal(a.records[keys], b.records[keys])
    pd.testing.assert_frame_equal(a.records, b.records, check_exact=False, rtol=1e-4, atol=1e-5)
    c = _run(None, spec.replace(seed=8))
    assert not c.records["index"].equals(a.records["index"])
    assert b.out is None


def test_faults_of_a_layer_do_not_depend_on_the_other_layers(tmp_path: Path) -> None:
    spec = hs.CampaignSpec(kind="neuron", n_faults=20, seed=5, only_correct=False)
    everything = _run(None, spec).records
    alone = _run(None, spec.replace(layers="2")).records
    mine = everything[everything["layer"] == "2"].reset_index(drop=True)
    assert mine[["index", "bit", "sample"]].equals(alone[["index", "bit", "sample"]])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (hs.CampaignSpec(layers="block*"), "matches no injectable layer"),
        (hs.CampaignSpec(layers=("0", "conv9")), "unknown layer.*conv9"),
        (hs.CampaignSpec(fmt="fp61"), "fp61"),
        (hs.CampaignSpec(bits=[40]), "do not exist in fp32"),
    ],
)
def test_bad_campaigns_fail_before_anything_is_written(tmp_path: Path, spec: hs.CampaignSpec, message: str) -> None:
    out = tmp_path / "r"
    with pytest.raises(ValueError, match=message):
        _run(out, spec)
    assert not out.exists()


def test_out_that_is_a_file_is_refused_untouched(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        _run(target, hs.CampaignSpec(n_faults=2))
    assert target.read_text() == "mine"


def test_data_forms_and_errors(tmp_path: Path) -> None:
    model = tiny_model()
    x, y = tiny_data(model)
    spec = hs.CampaignSpec(n_faults=10, layers="6", max_images=12, only_correct=False)
    pair = hs.run_campaign(model, (x, y), spec, progress=False)
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    for data in (dataset, loader):
        other = hs.run_campaign(model, data, spec, progress=False)
        pd.testing.assert_frame_equal(other.records, pair.records)
    assert pair.records["sample"].max() < 12
    with pytest.raises(ValueError, match="data must be a torch Dataset, a DataLoader or a pair of tensors"):
        hs.run_campaign(model, [1, 2, 3], spec, progress=False)
    with pytest.raises(ValueError, match="unknown backend 'spark'; expected one of local, ray"):
        hs.run_campaign(model, (x, y), spec, backend="spark", progress=False)


def test_load_results_of_missing_or_foreign_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such directory"):
        hs.load_results(tmp_path / "nothing")
    with pytest.raises(ValueError, match="not a headstrong campaign folder"):
        hs.load_results(tmp_path)

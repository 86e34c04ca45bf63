"""The study's hardening axis: hardened cells measured against the unhardened baseline, with the
range detector off as well, and the resilience-against-cost table and figure in the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import numpy as np
import pytest

from headstrong.study import parse_study, run_study
from headstrong.study.pipeline import campaign_names, grid

from _models import one_thread  # noqa: F401  (autouse fixture)


def _data(out: Path, **study) -> dict:
    return {
        "study": {"name": "hardening", "backbones": ["cnn-small"], "inits": ["baseline"], "formats": ["fp32"],
                  "hardenings": ["none", "range", "range+duplicate"], "out": str(out), **study},
        "train": {"epochs": 1, "limit_train": 128, "limit_test": 64, "batch_size": 64},
        "campaign": {"n_faults": 8, "max_images": 16, "weight_n_faults": 16},
    }


def test_grid_and_campaigns_with_the_axis(tmp_path: Path) -> None:
    config = parse_study(_data(tmp_path))
    assert [c.name for c in grid(config)] == [
        "cnn-small__baseline__s0", "cnn-small__baseline__s0__range", "cnn-small__baseline__s0__range-duplicate"]
    assert campaign_names(config) == ["neuron-fp32", "neuron-fp32-detector-off", "weight-last-fp32"]
    plain = parse_study({**_data(tmp_path), "study": {**_data(tmp_path)["study"], "hardenings": ["none"]}})
    assert "hardenings" not in plain.to_dict()  # a study without the axis keeps its study.json


@pytest.mark.slow
def test_study_with_hardenings(tmp_path: Path) -> None:
    result = run_study(parse_study(_data(tmp_path / "run")), progress=False)
    table = pd.read_csv(tmp_path / "run" / "hardening.csv")
    assert set(table["hardening"]) == {
        "range (neuron-fp32)", "range (neuron-fp32-detector-off)",
        "range+duplicate (neuron-fp32)", "range+duplicate (neuron-fp32-detector-off)"}
    off = table[table["hardening"].str.contains("detector-off")]
    assert not off["range_detector"].any() and table[~table.index.isin(off.index)]["range_detector"].all()
    assert (table["accuracy_change_pp"] == 0).all()  # bounds="max": no clean change
    dup = table[table["hardening"].str.startswith("range+duplicate")]
    assert (dup["macs"] == dup["macs_reference"] + 64 * 10).all()
    # DMR recomputes the head with the same (faulty) weights, so the study does not run the
    # duplicated head's weight campaign again (test_duplicated_head_weight_faults_are_the_plain_heads)
    cells = {c.cell.hardening: c for c in result.cells}
    assert "weight-last-fp32" in cells["range"].campaigns
    assert "weight-last-fp32" not in cells["range+duplicate"].campaigns
    summary = (tmp_path / "run" / "report" / "summary.md").read_text()
    assert "## Resilience against cost" in summary
    assert (tmp_path / "run" / "report" / "resilience_vs_cost.png").stat().st_size > 1000
    _check_results_tables(tmp_path / "run", cells)


def _check_results_tables(run: Path, cells: dict) -> None:
    """studies/tables.py (docs/RESULTS.md's tables) reads the study's own files."""
    import importlib.util
    import io
    from contextlib import redirect_stdout

    spec = importlib.util.spec_from_file_location("study_tables", Path(__file__).parents[1] / "studies" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert tables.main([str(run)]) == 0
    text = printed.getvalue()
    paired = pd.read_csv(run / "paired.csv")
    row = paired[(paired["campaign"] == "neuron-fp32") & (paired["figure"] == "delta_loss_last")
                 & (paired["a"] == "baseline") & (paired["b"] == "baseline + range")].iloc[0]
    line = next(l for l in text.splitlines() if l.startswith("| baseline | baseline + range |"))
    assert f"{row['estimate']:.3g}x [{row['ci_low']:.3g}, {row['ci_high']:.3g}]" in line
    assert f"baseline top-1 {100 * cells['none'].top1:.2f}%" in text and "| baseline + range+duplicate |" in text
    with redirect_stdout(io.StringIO()):
        assert tables.main([str(run / "models")]) == 2  # not a study folder: one line, exit 2


def test_duplicated_head_weight_faults_are_the_plain_heads(tmp_path: Path) -> None:
    """What lets the study skip them: shared weights, the same wrong value in both copies."""
    import torch

    import headstrong as hs
    from headstrong.study.pipeline import Cell, weights_pass_through

    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", 10, 1, small_input=True).eval()
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    spec = hs.CampaignSpec(kind="weight", layers=("head",), n_faults=48, images_per_fault="all", seed=3,
                           range_detector=False)
    plain = hs.run_campaign(model, (x, y), spec, out=tmp_path / "plain", progress=False).records
    doubled = hs.run_campaign(hs.harden.duplicate(model, ["head"]), (x, y), spec, out=tmp_path / "dup",
                              progress=False).records
    assert plain[["index", "bit", "sample"]].equals(doubled[["index", "bit", "sample"]])
    assert np.allclose(plain["faulty_loss"], doubled["faulty_loss"], rtol=1e-5, atol=1e-6, equal_nan=True)
    config = parse_study(_data(tmp_path))
    assert weights_pass_through(config, Cell("cnn-small", "baseline", 0, "range+duplicate"))
    assert not weights_pass_through(config, Cell("cnn-small", "baseline", 0, "range"))
    separate = parse_study({**_data(tmp_path), "harden": {"separate_weights": True}})
    assert not weights_pass_through(separate, Cell("cnn-small", "baseline", 0, "duplicate"))


@pytest.mark.parametrize(("change", "message"), [
    ({"hardenings": ["none", "ranger"]}, "allowed: none, fault-aware, range, clip, duplicate"),
    ({"hardenings": ["range"]}, "must include 'none'"),
])
def test_bad_hardenings(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_study(_data(tmp_path, **change))


def test_bad_harden_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'bound'"):
        parse_study({**_data(tmp_path), "harden": {"bound": "max"}})
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        parse_study({**_data(tmp_path), "harden": {"bounds": "q7"}})

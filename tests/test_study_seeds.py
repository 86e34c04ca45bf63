"""Arms paired by seed: the same data and fault sites per seed, the across-seed tables, stage times."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import headstrong as hs
from headstrong.campaign import CampaignSpec, run_campaign
from headstrong.harden import HardenOptions, apply_methods, parse_methods
from headstrong.metrics import summarize
from headstrong.study import parse_study
from headstrong.study.pipeline import Cell, _campaign_spec, _train_config
from headstrong.study.seeds import seed_tables
from headstrong.study.timing import StageClock, read_times, stage_table

from _models import PlainCNN, images, one_thread  # noqa: F401  (autouse fixture)


def _sites(result: object) -> set[tuple[str, int, int]]:
    records = result.records.drop_duplicates("fault_id")
    return set(zip(records["layer"], records["index"].astype(int), records["bit"].astype(int)))


@pytest.mark.parametrize("methods", ["range", "clip", "duplicate", "range+duplicate"])
def test_hardened_models_keep_layer_names_and_draw_the_same_pilot_sites(methods: str) -> None:
    torch.manual_seed(0)
    model = PlainCNN(in_chans=3).eval()
    x, y = images(12)
    hardened = apply_methods(model, parse_methods(methods), HardenOptions(), profile_data=x, train_data=None, out=None)
    assert hs.injectable_layers(hardened) == hs.injectable_layers(model)
    # a margin this wide stops every layer at the pilot: the whole stratified campaign is the pilot
    spec = CampaignSpec(kind="neuron", layers="all", margin=0.3, seed=5, only_correct=False)
    assert spec.stratified
    plain, hard = run_campaign(model, (x, y), spec, progress=False), run_campaign(hardened, (x, y), spec, progress=False)
    assert len(_sites(plain)) > 100 and _sites(plain) == _sites(hard)
    other = run_campaign(model, (x, y), CampaignSpec(kind="neuron", layers="all", margin=0.3, seed=6, only_correct=False),
                         progress=False)
    assert _sites(other) != _sites(plain)


def test_every_arm_of_a_seed_trains_on_the_same_data_and_campaigns_share_the_seed(tmp_path: Path) -> None:
    config = parse_study({"study": {"inits": ["baseline", "text", "etf"], "seeds": [3], "out": str(tmp_path)},
                          "train": {"limit_train": 500, "epochs": 2}})
    configs = [_train_config(config, Cell("cnn-small", init, 3)) for init in config.inits]
    shared = ("seed", "limit_train", "limit_test", "epochs", "batch_size", "lr", "augment", "dataset")
    assert all(all(getattr(c, k) == getattr(configs[0], k) for k in shared) for c in configs)
    assert {(c.head, c.init) for c in configs} == {("baseline", "text"), ("text", "text"), ("text", "etf")}
    specs = [_campaign_spec(config, "neuron-fp32", 3, "head"), _campaign_spec(config, "weight-last-fp32", 3, "head")]
    assert all(s.seed == 3 for s in specs)


def _run(layers: dict[str, np.ndarray], seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    frames = []
    for name, delta in layers.items():
        frames.append(pd.DataFrame({"layer": name, "delta_loss": delta, "golden_pred": 0,
                                    "faulty_pred": (rng.random(len(delta)) < 0.05).astype(int),
                                    "top2_diff": 50.0, "nonfinite": False}))
    records = pd.concat(frames, ignore_index=True)
    return SimpleNamespace(records=records, per_layer=summarize(records))


def test_seed_tables_pair_arms_by_seed() -> None:
    cells = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        scale = 1.0 + 0.1 * seed  # seeds differ; within a seed, "halved" has half the ΔLoss of the baseline
        for init, hardening, factor in (("baseline", "none", 1.0), ("baseline", "range", 0.5), ("text", "none", 1.0)):
            layers = {"conv": factor * scale * rng.exponential(1.0, 600), "fc": factor * scale * rng.exponential(1.0, 600)}
            cells.append(SimpleNamespace(cell=Cell("cnn-small", init, seed, hardening),
                                         campaigns={"neuron-fp32": _run(layers, seed)}))
    spread, paired = seed_tables(cells, rounds=500)
    assert set(spread["arm"]) == {"baseline", "baseline + range", "text"}
    assert (spread["seeds"] == 4).all()
    last = paired[(paired["figure"] == "delta_loss_last") & (paired["a"] == "baseline")].set_index("b")
    hard = last.loc["baseline + range"]
    assert hard["a"] == "baseline" and 1.7 < hard["estimate"] < 2.3 and hard["decided"]
    assert hard["reading"] == "baseline + range beats baseline (both 99% intervals exclude 1)"
    same = last.loc["text"]
    assert not same["decided"] and same["reading"].startswith("no clear difference")
    assert set(paired["figure"]) == {"delta_loss_last", "delta_loss_all", "median_delta_loss_last",
                                     "mismatch_last", "mismatch_all"}


def test_stage_times_survive_attempts(tmp_path: Path) -> None:
    first = StageClock(tmp_path)
    with first.stage("train", "cnn-small__baseline__s0"):
        pass
    with first.stage("campaign", "cnn-small__baseline__s0", "neuron-fp32"):
        pass
    (tmp_path / "timings.jsonl").open("a").write('{"attempt": 1, "stage": "tra')  # a line cut short by a kill
    second = StageClock(tmp_path)
    assert second.attempt == 2
    with second.stage("train", "cnn-small__baseline__s0"):
        pass
    assert [t.attempt for t in read_times(tmp_path)] == [1, 1, 2]
    table = stage_table(tmp_path).set_index("stage")
    assert table.loc["train", "count"] == 2 and table.loc["train", "attempts"] == 2
    assert table.loc["total", "count"] == 3


def test_campaigns_sized_by_margin_and_hardenings_on_chosen_inits(tmp_path: Path) -> None:
    from headstrong.study.pipeline import campaign_names, grid

    config = parse_study({"study": {"inits": ["baseline", "text", "etf"], "formats": ["fp32", "int8"],
                                    "hardenings": ["none", "range"], "hardening_inits": ["baseline"],
                                    "out": str(tmp_path)}})
    assert [c.name for c in grid(config)] == ["cnn-small__baseline__s0", "cnn-small__baseline__s0__range",
                                              "cnn-small__text__s0", "cnn-small__etf__s0"]
    assert campaign_names(config, Cell("cnn-small", "baseline", 0, "range")) == [
        "neuron-fp32", "neuron-int8", "neuron-fp32-detector-off", "neuron-int8-detector-off", "weight-last-fp32"]
    assert campaign_names(config, Cell("cnn-small", "text", 0)) == ["neuron-fp32", "neuron-int8", "weight-last-fp32"]
    neuron = _campaign_spec(config, "neuron-int8-detector-off", 0, "head")
    assert neuron.stratified and neuron.margin == 0.005 and neuron.target == "mismatch" and neuron.fmt == "int8"
    assert not neuron.range_detector and neuron.n_faults is None
    weight = _campaign_spec(config, "weight-last-fp32", 0, "head")
    assert weight.images_per_fault == "all" and weight.n_faults == 2048 and weight.layers == ("head",)
    fixed = parse_study({"study": {"out": str(tmp_path)}, "campaign": {"n_faults": 64}})
    assert not _campaign_spec(fixed, "neuron-fp32", 0, "head").stratified


@pytest.mark.parametrize(("data", "message"), [
    ({"study": {"hardening_inits": ["etf"]}}, r"\[study\] hardening_inits: unknown value\(s\) 'etf'"),
    ({"campaign": {"margin": 1.5}}, r"\[campaign\] margin must be a number in the open interval \(0, 1\)"),
    ({"campaign": {"target": "loss"}}, r"\[campaign\] target: unknown 'loss'; allowed: mismatch, delta_loss"),
    ({"campaign": {"max_faults": 0}}, r"\[campaign\] max_faults must be a positive integer"),
])
def test_bad_sizing_settings(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_study(data)


@pytest.mark.parametrize("name", ["smoke.toml", "decide_cpu_cnn.toml", "decide_cpu_resnet.toml"])
def test_shipped_study_configs_parse(name: str) -> None:
    from headstrong.study import load_study
    from headstrong.study.pipeline import grid

    config = load_study(Path(__file__).parent.parent / "studies" / name)
    assert config.campaign.n_faults is None or name == "smoke.toml"
    assert len(grid(config)) >= 4


def test_report_section_says_which_arm_beats_which() -> None:
    from headstrong.study.summary import _seeds_section

    rng = np.random.default_rng(1)
    cells = []
    for seed in range(3):
        for init, hardening, factor in (("baseline", "none", 1.0), ("baseline", "range", 0.25)):
            layers = {"fc": factor * rng.exponential(1.0, 400)}
            cells.append(SimpleNamespace(cell=Cell("cnn-small", init, seed, hardening),
                                         campaigns={"neuron-fp32": _run(layers, seed)}))
    _, paired = seed_tables(cells, rounds=300)
    md: list[str] = []
    parts = _seeds_section(SimpleNamespace(paired=paired), md)
    text = "\n".join(md)
    assert "## Across seeds (arms paired by seed)" in text and "<table>" in "".join(parts)
    assert "baseline + range beats baseline (both 99% intervals exclude 1)" in text


def test_headline_takes_the_paired_interval_across_seeds() -> None:
    """Several seeds: the headline's improvement is the paired comparison's (geometric mean, interval
    over seeds and faults, its reading), not the envelope of the seeds' own intervals."""
    from headstrong.study.summary import aggregate, headline_rows

    rows = []
    for seed, (ratio, low, high) in enumerate([(1.5, 1.1, 2.0), (3.0, 2.0, 4.5), (2.0, 1.4, 2.9)]):
        rows.append({"backbone": "cnn-small", "init": "text", "campaign": "neuron-fp32", "seed": seed,
                     "baseline_top1": 0.9, "text_top1": 0.9, "improvement_last": ratio,
                     "improvement_last_ci_low": low, "improvement_last_ci_high": high, "improvement_overall": ratio,
                     "improvement_overall_ci_low": low, "improvement_overall_ci_high": high,
                     "baseline_top2_diff": 70.0, "text_top2_diff": 70.0, "baseline_mismatch": 0.01,
                     "text_mismatch": 0.01})
    summary = pd.DataFrame(rows)
    envelope = aggregate(summary)
    assert envelope.loc[0, "improvement_last_ci_low"] == 1.1 and envelope.loc[0, "improvement_last_ci_high"] == 4.5
    paired = pd.DataFrame([
        {"backbone": "cnn-small", "campaign": "neuron-fp32", "figure": "delta_loss_last", "a": "baseline", "b": "text",
         "estimate": 2.08, "ci_low": 1.2, "ci_high": 3.6, "decided": False},
        {"backbone": "cnn-small", "campaign": "neuron-fp32", "figure": "delta_loss_all", "a": "baseline", "b": "text",
         "estimate": 2.08, "ci_low": 1.3, "ci_high": 3.3, "decided": True},
    ])
    table = aggregate(summary, paired)
    row = table.iloc[0]
    assert (row["improvement_last"], row["improvement_last_ci_low"], row["improvement_last_ci_high"]) == (2.08, 1.2, 3.6)
    headings, body = headline_rows(table)
    last = body[0][headings.index("improvement, last layer [99% CI]")]
    overall = body[0][headings.index("improvement, overall [99% CI]")]
    assert last == "2.08x [1.2, 3.6] (no clear difference: the paired t interval across seeds includes 1 (across seeds))"
    assert overall == "2.08x [1.3, 3.3] (text-guided better (across seeds))"


def test_a_last_layer_corrected_in_every_seed_is_decided() -> None:
    """DMR zeroes the last layer's ΔLoss: no ratio to bootstrap, and yet a clear answer."""
    cells = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for hardening, fc in (("none", rng.exponential(1.0, 400)), ("duplicate", np.zeros(400)),
                              ("range+duplicate", np.zeros(400))):
            layers = {"conv": rng.exponential(1.0, 400), "fc": fc}
            cells.append(SimpleNamespace(cell=Cell("cnn-small", "baseline", seed, hardening),
                                         campaigns={"neuron-fp32": _run(layers, seed)}))
    _, paired = seed_tables(cells, rounds=200)
    last = paired[paired["figure"] == "delta_loss_last"].set_index(["a", "b"])
    dup = last.loc[("baseline", "baseline + duplicate")]
    assert dup["decided"] and dup["estimate"] == np.inf
    assert dup["reading"] == ("baseline + duplicate beats baseline: baseline + duplicate's mean ΔLoss is 0 in every "
                              "seed (each fault corrected)")
    both = last.loc[("baseline + duplicate", "baseline + range+duplicate")]
    assert not both["decided"] and both["reading"] == "no difference: both are 0 in every seed"
    assert not paired[paired["figure"] == "delta_loss_all"]["method"].str.contains("0 in every seed").any()

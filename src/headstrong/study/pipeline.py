"""The pipeline behind ``headstrong demo`` and ``headstrong study``.

For every cell of the grid (backbone x init x seed) it trains one model with the shared recipe,
runs the campaigns (neuron faults over every injectable layer in each format, weight faults on
the classification layer), and compares each text-guided model with the baseline of the same
backbone and seed. Every stage keeps its results under ``out`` and is skipped or resumed when it
is already there, so a killed study continues where it stopped; each stage's wall time goes to
``timings.jsonl`` (``study.timing``).

Arms are paired by seed: every arm of a seed trains on the same data order (the recipe draws it
from the seed and the epoch, not from the head), and a campaign's faults in a layer come from
(seed, kind, layer name), so the layers two arms share (every layer of a hardened model; the
backbone of two heads) get the same fault sites. ``study.seeds`` compares the arms across seeds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
import torch

from headstrong._lock import hold_folder
from headstrong.study.config import StudyConfig
from headstrong.study.timing import StageClock

Say = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    backbone: str
    init: str  # "baseline" or a text-guided init
    seed: int
    hardening: str = "none"  # "none", a headstrong.harden method or a '+' combination

    @property
    def name(self) -> str:
        suffix = "" if self.hardening == "none" else "__" + self.hardening.replace("+", "-")
        return f"{self.backbone}__{self.init}__s{self.seed}{suffix}"

    @property
    def trained_name(self) -> str:
        """The trained model's folder: shared by every hardening of the same model."""
        return f"{self.backbone}__{self.init}__s{self.seed}"

    @property
    def is_baseline(self) -> bool:
        return self.init == "baseline"


@dataclass
class CellResult:
    cell: Cell
    top1: float
    params: int
    macs: int
    checkpoint: Path
    campaigns: dict[str, Any] = field(default_factory=dict)  # campaign name -> CampaignResult
    cost: Any = None  # headstrong.harden.Cost against the unhardened model (hardened cells)
    correct: Any = None  # per test image: classified correctly (hardened cells and their references)


@dataclass
class Comparison:
    """One text-guided cell against the baseline of its backbone and seed, in one campaign."""

    baseline: CellResult
    text: CellResult
    campaign: str
    table: pd.DataFrame  # ``report.compare.compare_runs`` of the two runs


@dataclass
class StudyResult:
    config: StudyConfig
    cells: list[CellResult]
    pairs: list[Comparison]
    comparisons: pd.DataFrame  # one row per (text cell, campaign, matched layer)
    summary: pd.DataFrame  # one row per (backbone, init, seed, campaign): last-layer and overall improvement
    out: Path
    report: Optional[Path] = None
    hardening: Optional[pd.DataFrame] = None  # one row per (hardened cell, campaign): resilience against cost
    hardening_rows: list[Any] = field(default_factory=list)  # report.hardening.HardeningRow, same rows
    spread: Optional[pd.DataFrame] = None  # study.seeds: one row per (backbone, campaign, arm, figure)
    paired: Optional[pd.DataFrame] = None  # study.seeds: every two arms, paired by seed


def hardened_init(config: StudyConfig, init: str) -> bool:
    """Whether the hardening axis applies to this init (``hardening_inits``; empty: every init)."""
    return not config.hardening_inits or init in config.hardening_inits


def grid(config: StudyConfig) -> list[Cell]:
    """Cells in the order they run: per backbone and seed, the baseline first; per model, the
    unhardened cell first. Hardenings apply to the inits of ``hardening_inits`` (all by default)."""
    inits = ["baseline", *[i for i in config.inits if i != "baseline"]]
    hardenings = ["none", *[h for h in config.hardenings if h != "none"]]
    return [Cell(b, i, s, h) for b in config.backbones for s in config.seeds for i in inits for h in hardenings
            if h == "none" or hardened_init(config, i)]


DETECTOR_OFF = "-detector-off"


def campaign_names(config: StudyConfig, cell: Optional[Cell] = None) -> list[str]:
    """Neuron campaigns per format; with a hardening axis and the range detector on, each again
    with the detector off (a range-restricted model is its own detector: judge it without), for
    the cells of the inits the axis applies to (``cell``: that cell's campaigns; None: all)."""
    names = [f"neuron-{fmt}" for fmt in config.formats]
    hardened = cell is None or hardened_init(config, cell.init)
    if config.campaign.range_detector and hardened and any(h != "none" for h in config.hardenings):
        names += [f"neuron-{fmt}{DETECTOR_OFF}" for fmt in config.formats]
    if config.campaign.weight_last_layer and not (cell is not None and weights_pass_through(config, cell)):
        names.append("weight-last-fp32")
    return names


def weights_pass_through(config: StudyConfig, cell: Cell) -> bool:
    """Whether the cell's weight faults give exactly the outcomes of the same model without its
    duplicate: copies that share the layer's weights (the default) compute the same wrong value,
    so nothing is corrected (harden/duplicate.py); the study does not pay one full forward pass
    per fault to measure that again (``tests/test_study_hardening.py`` checks the equality)."""
    return "duplicate" in cell.hardening.split("+") and not config.harden.get("separate_weights", False)


def _train_config(config: StudyConfig, cell: Cell) -> Any:
    from headstrong.train import TrainConfig

    head = "baseline" if cell.is_baseline else "text"
    init = "text" if cell.is_baseline else cell.init
    return TrainConfig(**{
        **config.train, "dataset": config.dataset, "encoder": config.encoder, "backbone": cell.backbone,
        "head": head, "init": init, "seed": cell.seed, "device": config.device,
    })


def _cost(model: torch.nn.Module, sample_shape: tuple[int, ...]) -> tuple[int, int]:
    """Parameters and multiply-accumulates per image (conv and linear layers)."""
    from headstrong.ra.sites import layer_shapes

    params = sum(p.numel() for p in model.parameters())
    macs = sum(shape.macs for shape in layer_shapes(model, sample_shape))
    return int(params), int(macs)


def _campaign_spec(config: StudyConfig, name: str, seed: int, classifier: str) -> Any:
    from headstrong.campaign import CampaignSpec

    settings = config.campaign
    detector = settings.range_detector and not name.endswith(DETECTOR_OFF)
    common = dict(seed=seed, max_images=settings.max_images, range_detector=detector)
    if name.startswith("neuron-"):
        fmt = name[len("neuron-"):].removesuffix(DETECTOR_OFF)
        if settings.n_faults is None:  # stratified by (layer, bit), each layer sized by margin
            return CampaignSpec(kind="neuron", layers="all", fmt=fmt, margin=settings.margin, target=settings.target,
                                max_faults=settings.max_faults, sampling="stratified", **common)
        return CampaignSpec(kind="neuron", layers="all", fmt=fmt, n_faults=settings.n_faults, **common)
    # a weight fault is permanent: it meets every evaluation image (PyTorchFI's and GoldenEye's protocol)
    return CampaignSpec(kind="weight", layers=(classifier,), fmt="fp32", n_faults=settings.weight_n_faults,
                        images_per_fault="all", **common)


def run_cell(config: StudyConfig, cell: Cell, eval_data: Any, out: Path, say: Say, progress: bool,
             reference: Optional[CellResult] = None, clock: Optional[StageClock] = None) -> CellResult:
    """Train (or find) the cell's model, harden it when the cell asks, run its campaigns.

    ``reference``: the unhardened baseline cell of the same backbone and seed (hardened cells
    are measured against it: latency in the same run, accuracy on the same images)."""
    from headstrong.campaign import run_campaign
    from headstrong.train import load_checkpoint, train

    clock = clock or StageClock(out)
    cell_dir = out / "models" / cell.trained_name
    say(f"[bold]train[/] {cell.trained_name}")
    with clock.stage("train", cell.trained_name):
        trained = train(_train_config(config, cell), cell_dir, progress=progress)
    model, _ = load_checkpoint(trained.checkpoint)
    model.eval()
    top1 = float(trained.top1) / 100.0  # percent -> share
    cost = correct = None
    if reference is not None and any(h != "none" for h in config.hardenings):
        if cell.hardening != "none":
            say(f"[bold]harden[/] {cell.name}")
        with clock.stage("harden", cell.name):
            model, cost, correct = _harden(config, cell, model, reference, out)
        top1 = float(correct.float().mean())
    params, macs = _cost(model, tuple(eval_data[0].shape[1:]))
    if cost is not None:  # counted from what runs: duplicates, stored bounds and copies included
        params, macs = cost.params, cost.macs
    result = CellResult(cell, top1, params, macs, trained.checkpoint, cost=cost, correct=correct)
    classifier = getattr(model, "classifier_name", None)
    for name in campaign_names(config, cell):
        if name.startswith("weight") and classifier is None:
            continue
        say(f"[bold]campaign[/] {cell.name} {name}")
        spec = _campaign_spec(config, name, cell.seed, classifier or "")
        with clock.stage("campaign", cell.name, name):
            result.campaigns[name] = run_campaign(
                model, eval_data, spec, device=config.device, out=out / "campaigns" / cell.name / name,
                batch_size=config.campaign.batch_size, progress=progress,
            )
    return result


def _images(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.as_tensor(labels)


@torch.no_grad()
def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + 500]).argmax(1) == y[i:i + 500] for i in range(0, len(x), 500)])


def _harden(config: StudyConfig, cell: Cell, model: torch.nn.Module, reference: Optional[CellResult],
            out: Path) -> tuple[torch.nn.Module, Any, torch.Tensor]:
    """The cell's hardened model, its cost against the unhardened baseline (measured now, in
    this run) and which test images it classifies correctly (the recipe's test subset)."""
    from headstrong.data import load_dataset
    from headstrong.harden import HardenOptions, apply_methods, measure_cost, parse_methods
    from headstrong.train import load_checkpoint

    if reference is None:
        raise ValueError(f"internal: hardened cell {cell.name} has no unhardened baseline to compare with")
    options = HardenOptions(**{**config.harden, "seed": cell.seed})
    profile, _ = _images(load_dataset(config.dataset, "train", limit=2000, seed=1))
    hardened = apply_methods(model, parse_methods(cell.hardening), options, profile_data=profile,
                             train_data=config.dataset, out=out / "models" / cell.name / "fault_aware")
    test_x, test_y = _images(load_dataset(config.dataset, "test", limit=config.train.get("limit_test"), seed=cell.seed))
    base, _ = load_checkpoint(reference.checkpoint)
    if reference.correct is None:
        reference.correct = _correct(base, test_x, test_y)
    cost = measure_cost(hardened, base, test_x[:128], repeats=20)
    return hardened, cost, _correct(hardened, test_x, test_y)


def _eval_data(config: StudyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images every campaign draws from (the first max_images of a seeded shuffle)."""
    from headstrong.data import load_dataset

    dataset = load_dataset(config.dataset, "test", limit=config.campaign.max_images, seed=0)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.as_tensor(labels)


def compare_cells(cells: list[CellResult]) -> list[Comparison]:
    """Every text-guided cell against the baseline of its backbone and seed, per campaign."""
    from headstrong.report.compare import compare_runs

    baselines = {(r.cell.backbone, r.cell.seed): r for r in cells if r.cell.is_baseline}
    pairs = []
    for text in cells:
        if text.cell.is_baseline:
            continue
        base = baselines[(text.cell.backbone, text.cell.seed)]
        for name, run in text.campaigns.items():
            if name in base.campaigns:
                pairs.append(Comparison(base, text, name, compare_runs(base.campaigns[name], run)))
    return pairs


def tabulate(pairs: list[Comparison]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All matched layers of every comparison, and the headline row of each."""
    tables, rows = [], []
    for pair in pairs:
        keys = dict(backbone=pair.text.cell.backbone, init=pair.text.cell.init, seed=pair.text.cell.seed,
                    campaign=pair.campaign)
        tables.append(pair.table.assign(**keys))
        rows.append({**keys, **_headline(pair.table, pair.baseline, pair.text, pair.campaign)})
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), pd.DataFrame(rows)


def _headline(table: pd.DataFrame, base: CellResult, text: CellResult, name: str) -> dict[str, Any]:
    """The paper's table for one comparison: accuracy, cost, improvement, top-2 diff, mismatch."""
    by_layer = table.set_index("layer")
    last, overall = by_layer.loc["last layer"], by_layer.loc["overall"]
    b_runs, t_runs = base.campaigns[name].per_layer, text.campaigns[name].per_layer
    return {
        "baseline_top1": base.top1, "text_top1": text.top1,
        "baseline_params": base.params, "text_params": text.params,
        "baseline_macs": base.macs, "text_macs": text.macs,
        "improvement_last": float(last["ratio"]),
        "improvement_last_ci_low": float(last["ratio_ci_low"]),
        "improvement_last_ci_high": float(last["ratio_ci_high"]),
        "improvement_overall": float(overall["ratio"]),
        "improvement_overall_ci_low": float(overall["ratio_ci_low"]),
        "improvement_overall_ci_high": float(overall["ratio_ci_high"]),
        "baseline_delta_loss_last": float(last["baseline_delta_loss"]),
        "text_delta_loss_last": float(last["textguided_delta_loss"]),
        "baseline_top2_diff": float(b_runs["top2_diff_mean"].mean()),
        "text_top2_diff": float(t_runs["top2_diff_mean"].mean()),
        "baseline_mismatch": float(b_runs["mismatch_rate"].mean()),
        "text_mismatch": float(t_runs["mismatch_rate"].mean()),
    }


def run_study(config: StudyConfig, *, progress: bool = True, say: Optional[Say] = None) -> StudyResult:
    """Run (or resume) every stage of a study; returns the cells, comparisons and summary.

    The study holds its folder (headstrong._lock): a second study on it is refused, not mixed in.
    """
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"study output {str(out)!r} is a file; give a directory")
    with hold_folder(out, "study"):
        return _run_study_held(config, out, progress, say)


def _run_study_held(config: StudyConfig, out: Path, progress: bool, say: Optional[Say]) -> StudyResult:
    from headstrong.study.summary import write_study_report

    from headstrong.study.seeds import seed_tables

    _check_same_study(config, out)
    say = say or (lambda message: None)
    clock = StageClock(out)
    eval_data = _eval_data(config)
    cells: list[CellResult] = []
    for cell in grid(config):
        reference = next((r for r in cells if r.cell == Cell(cell.backbone, "baseline", cell.seed)), None)
        cells.append(run_cell(config, cell, eval_data, out, say, progress, reference, clock))
    with clock.stage("compare"):
        pairs = compare_cells([r for r in cells if r.cell.hardening == "none"])
        comparisons, summary = tabulate(pairs)
        comparisons.to_csv(out / "comparisons.csv", index=False)
        summary.to_csv(out / "summary.csv", index=False)
        result = StudyResult(config, cells, pairs, comparisons, summary, out)
        result.hardening_rows = hardening_rows(cells)
        if result.hardening_rows:
            from headstrong.report.hardening import hardening_table

            result.hardening = hardening_table(result.hardening_rows)
            result.hardening.to_csv(out / "hardening.csv", index=False)
    say("[bold]statistics[/] across seeds")
    with clock.stage("statistics"):
        result.spread, result.paired = seed_tables(cells)
        result.spread.to_csv(out / "seeds.csv", index=False)
        result.paired.to_csv(out / "paired.csv", index=False)
    say("[bold]report[/]")
    with clock.stage("report"):
        result.report = write_study_report(result)
    from headstrong.study.timing import stage_table

    stage_table(out).to_csv(out / "timings.csv", index=False)
    return result


def hardening_rows(cells: list[CellResult]) -> list[Any]:
    """Every hardened cell (and every unhardened text-guided cell, when hardenings ran) against
    the unhardened baseline of its backbone and seed, per neuron campaign."""
    from headstrong.report.hardening import (
        HardeningRow,
        Ratio,
        accuracy_change,
        improvement,
        mean_delta_loss,
        median_delta_loss,
    )

    rows = []
    references = {(r.cell.backbone, r.cell.seed): r for r in cells if r.cell.init == "baseline" and r.cell.hardening == "none"}
    for cell in cells:
        ref = references.get((cell.cell.backbone, cell.cell.seed))
        if ref is None or cell is ref or cell.cost is None or ref.correct is None:
            continue
        for name, run in cell.campaigns.items():
            if not name.startswith("neuron-") or name not in ref.campaigns:
                continue
            a, b = ref.campaigns[name].records, run.records
            last_a, last_b = list(ref.campaigns[name].per_layer["layer"])[-1:], list(run.per_layer["layer"])[-1:]
            cost = cell.cost
            rows.append(HardeningRow(
                backbone=cell.cell.backbone, head=cell.cell.init, hardening=f"{cell.cell.hardening} ({name})",
                range_detector=bool(ref.campaigns[name].spec.range_detector),
                top1_reference=100 * float(ref.correct.float().mean()), top1=100 * float(cell.correct.float().mean()),
                accuracy_change_pp=accuracy_change(ref.correct.numpy(), cell.correct.numpy()),
                improvement_all=improvement(a, b), improvement_last=improvement(a, b, last_a, last_b),
                delta_loss_all=mean_delta_loss(b), delta_loss_all_reference=mean_delta_loss(a),
                delta_loss_last=mean_delta_loss(b, last_b), delta_loss_last_reference=mean_delta_loss(a, last_a),
                median_delta_loss_all=median_delta_loss(b), median_delta_loss_all_reference=median_delta_loss(a),
                params=cost.params, params_reference=cost.params_reference, macs=cost.macs,
                macs_reference=cost.macs_reference,
                latency_overhead=Ratio(cost.latency_overhead, *cost.latency_overhead_ci, level=0.95),
            ))
    return rows


def _check_same_study(config: StudyConfig, out: Path) -> None:
    """A rerun continues the same study; a different one on the same folder is refused."""
    path = out / "study.json"
    current = config.to_dict()
    current["campaign"] = dataclasses.asdict(config.campaign)
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ValueError(f"{path} is corrupt; remove it or use another output folder") from None
        if previous != json.loads(json.dumps(current)):
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != json.loads(json.dumps(current)).get(k))
            raise ValueError(
                f"{out} holds a different study (settings that differ: {', '.join(changed)}); "
                "use another output folder or the same settings to resume"
            )
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(current, indent=2))
    tmp.replace(path)

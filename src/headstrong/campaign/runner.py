"""Running a campaign in three steps: plan it, execute its units (locally or on Ray), load it.

``plan_campaign`` checks everything and plans the work without writing; ``run_campaign`` then
holds the run folder (one run at a time), writes or checks the manifest, executes the pending
units and loads the records. Nothing is written under ``out`` until the spec, data, model and
layer selection are known to be good, so a bad call never touches stored results; a rerun on the
same ``out`` resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from headstrong import __version__
from headstrong.campaign import plan as planning
from headstrong.campaign import storage
from headstrong.campaign.plan import Plan, Unit
from headstrong.campaign.progress import campaign_progress
from headstrong.campaign.spec import CampaignSpec, resolve_bits, select_layers
from headstrong.engine import FaultEvaluator, Outcomes, injectable_layers
from headstrong.faults import FaultSet

BACKENDS = ("local", "ray")
DEFAULT_CHUNK = 2048
DEFAULT_BATCH = 256
GROUP_PAIRS = 1 << 17  # pairs handed to the engine at once when a fault meets several images

SITE_COLUMNS = ("fault_id", "kind", "layer", "layer_pos", "index", "bit", "sample", "label")
RECORD_COLUMNS = (*SITE_COLUMNS, *Outcomes.COLUMNS)


@dataclass
class CampaignResult:
    """A finished campaign: its records, per-layer and per-bit summaries, and where it lives.

    The summaries are computed on first use (the per-bit one has a group per layer and bit).
    """

    spec: CampaignSpec
    out: Path | None
    records: pd.DataFrame
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def layers(self) -> list[str]:
        """The campaign's layers in the model's forward order."""
        return list(self.manifest.get("layers", []))

    @cached_property
    def per_layer(self) -> pd.DataFrame:
        """``metrics.summarize`` by layer, in forward order."""
        return _summary(self.records, ("layer",))

    @cached_property
    def per_bit(self) -> pd.DataFrame:
        """``metrics.summarize`` by layer and bit, in forward order then bit."""
        return _summary(self.records, ("layer", "bit"))


# ------------------------------------------------------------------------------------ plan


def make_evaluator(model: torch.nn.Module, spec: CampaignSpec, images: torch.Tensor, labels: torch.Tensor,
                   device: str | torch.device, batch_size: int) -> FaultEvaluator:
    """The engine with the campaign's format, range detector and fault model, profiled over all
    considered images (independent of batching); for fp32 that pass is also the golden pass."""
    evaluator = FaultEvaluator(model, fmt=spec.fmt, range_detector=spec.range_detector, device=device,
                               fault_model=spec.fault_model_object())
    evaluator.profile((images[i : i + batch_size], labels[i : i + batch_size])
                      for i in range(0, images.shape[0], batch_size))
    return evaluator


def plan_campaign(
    model: torch.nn.Module, evaluator: FaultEvaluator, spec: CampaignSpec, images: torch.Tensor,
    labels: torch.Tensor, batch_size: int, chunk_size: int,
) -> Plan:
    """The whole campaign as units, checked against the model and data; writes nothing."""
    bits = resolve_bits(spec, evaluator.fmt)
    first = next(iter(model.parameters()), None)
    probe = images[:2].to(first.device if first is not None else "cpu")
    sizes = evaluator.sizes(spec.kind)
    profiled = set(evaluator.layer_info["layer"])
    available = [name for name in injectable_layers(model, probe) if name in profiled]
    layers = select_layers(spec, available)
    empty = [name for name in layers if name not in sizes]
    if empty:
        raise ValueError(f"layer(s) {', '.join(empty)} have no {spec.kind} fault sites; choose other layers")
    eval_samples = _eval_samples(evaluator, spec, images, labels, batch_size)
    per_fault = spec.images_per_fault_for(len(eval_samples))
    plans = planning.plan_layers(spec, layers, {n: i for i, n in enumerate(available)},
                                 {n: sizes[n] for n in layers}, bits, _sample_size())
    plan = Plan(spec, tuple(plans), images, labels, eval_samples, per_fault, batch_size)
    return plan.with_units(planning.make_units(plans, chunk_size, per_fault))


def _eval_samples(evaluator: FaultEvaluator, spec: CampaignSpec, images: torch.Tensor, labels: torch.Tensor,
                  batch_size: int) -> torch.Tensor:
    """Positions of the evaluation images: all of them, or those the campaign's own golden
    model (its ``kind``'s tensors held in the format) classifies correctly."""
    n = images.shape[0]
    golden = evaluator.golden(images, labels, kind=spec.kind, batch_size=batch_size)  # refuses NaN logits
    if not spec.only_correct:
        return torch.arange(n)
    correct = torch.nonzero(golden.golden_pred == labels).flatten()
    if correct.numel() == 0:
        raise ValueError(
            f"the golden model ({spec.kind} tensors in {spec.fmt}) classifies none of the {n} images correctly, "
            "so only_correct leaves nothing to evaluate; check the model and data set, or set only_correct=False"
        )
    return correct


def _sample_size() -> Callable[[int, float, float], int]:
    from headstrong.faults import sample_size

    return lambda population, margin, confidence: int(sample_size(population, margin, confidence))


# ------------------------------------------------------------------------------------ execute


def _fault_groups(start: int, stop: int, n_eval: int, per_fault: int, batch_size: int) -> list[tuple[int, int]]:
    """Faults handed to the engine together. One image each: ranges that map onto one
    contiguous, block-aligned slice of the eval images (as campaigns always did, so a fault
    model's draws, seeded by the group, are unchanged); several: up to ``GROUP_PAIRS`` pairs."""
    if per_fault > 1:
        size = max(1, GROUP_PAIRS // per_fault)
        return [(k, min(k + size, stop)) for k in range(start, stop, size)]
    out = []
    k = start
    while k < stop:
        position = k % n_eval
        block_end = min((position // batch_size + 1) * batch_size, n_eval)
        end = min(stop, k + block_end - position)
        out.append((k, end))
        k = end
    return out


def _generator(seed: int, fault_model: Any, sites: FaultSet) -> torch.Generator:
    """Draws of a fault model beyond its planned sites (multi-site, ber), seeded by the sites."""
    digest = hashlib.sha256()
    digest.update(str((seed, fault_model.describe(), sites.layer_names)).encode())
    digest.update(sites.index.numpy().tobytes())
    digest.update(sites.bit.numpy().tobytes())
    return torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little"))


def _repeat(value: str, n: int) -> pa.Array:
    """A string column of one value, built in Arrow (no Python list of n strings)."""
    return pc.take(pa.array([value]), pa.array(np.zeros(n, dtype=np.int32)))


def run_units(evaluator: FaultEvaluator, plan: Plan, out: Path, units: Sequence[Unit],
              advance: Callable[[int], None] | None = None, keep: dict[str, pa.Table] | None = None) -> None:
    """Evaluate each unit's (fault, image) pairs and store its records; ``advance(n)`` after
    every group of n pairs; ``keep``: also keep each unit's table, by unit id. Pair p meets eval
    image p mod n_eval, as ``headstrong.campaign.plan`` says."""
    spec, per_fault = plan.spec, plan.images_per_fault
    n_eval = plan.eval_samples.shape[0]
    eval_x, eval_y = plan.images[plan.eval_samples], plan.labels[plan.eval_samples]
    blocks = [(b, min(b + plan.batch_size, n_eval)) for b in range(0, n_eval, plan.batch_size)]
    block_data = [(eval_x[b0:b1], eval_y[b0:b1]) for b0, b1 in blocks]
    sizes = evaluator.sizes(spec.kind)
    fault_model = evaluator.fault_model
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for unit in units:
        layer = plan.layer(unit.layer)
        if layer.name not in cache:
            cache.clear()  # units come layer by layer: keep one layer's faults at a time
            cache[layer.name] = planning.layer_faults(spec, layer)
        indices, bits = cache[layer.name]
        outcomes = Outcomes.empty(unit.rows)
        for g0, g1 in _fault_groups(unit.start // per_fault, unit.stop // per_fault, n_eval, per_fault,
                                    plan.batch_size):
            sites = FaultSet(spec.kind, layer.name, indices[g0:g1], bits[g0:g1])
            edits = fault_model.expand(sites, evaluator.fmt, sizes, _generator(spec.seed, fault_model, sites))
            pairs = torch.arange(g0 * per_fault, g1 * per_fault)
            image = pairs % n_eval
            for (b0, b1), (bx, by) in zip(blocks, block_data):
                sel = ((image >= b0) & (image < b1)).nonzero().flatten()
                if not len(sel):
                    continue
                got = evaluator.evaluate_pairs(bx, by, edits, pairs[sel] // per_fault - g0, image[sel] - b0)
                if len(sel) == len(pairs):  # the whole group in this block: one run of the unit's pairs
                    at: Any = slice(g0 * per_fault - unit.start, g1 * per_fault - unit.start)
                else:
                    at = pairs[sel] - unit.start
                for name, value in got.tensors().items():
                    getattr(outcomes, name)[at] = value
            if advance is not None:
                advance(len(pairs))
        table = _records(plan, layer, unit, indices, bits, outcomes)
        storage.write_chunk(out, unit.id, table)
        if keep is not None:
            keep[unit.id] = table


def _records(plan: Plan, layer: planning.LayerPlan, unit: Unit, indices: torch.Tensor, bits: torch.Tensor,
             outcomes: Outcomes) -> pa.Table:
    """One unit's records: the planned site of each pair, its image, and its outcomes."""
    pairs = torch.arange(unit.start, unit.stop)
    fault = pairs // plan.images_per_fault
    sample = plan.eval_samples[pairs % plan.eval_samples.shape[0]]
    n = unit.rows
    columns = {
        "fault_id": (layer.fault_offset + fault).numpy(),
        "kind": _repeat(plan.spec.kind, n),
        "layer": _repeat(layer.name, n),
        "layer_pos": np.full(n, layer.position, dtype=np.int64),
        "index": indices[fault].numpy(),
        "bit": bits[fault].numpy().astype("int16"),
        "sample": sample.numpy(),
        "label": plan.labels[sample].numpy(),
        **outcomes.columns(),
    }
    if plan.spec.stratified:  # each record's stratum and that stratum's share of the uniform population
        from headstrong.faults.strata import Strata

        strata = Strata(layer.name, layer.elements, layer.bits)
        code = strata.codes(bits[fault].numpy())
        columns["stratum"] = pa.DictionaryArray.from_arrays(pa.array(code.astype(np.int32)), pa.array(strata.labels()))
        columns["weight"] = strata.weights[code]
    return pa.table(columns)


def execute(
    model: torch.nn.Module, evaluator: FaultEvaluator, plan: Plan, out: Path, units: Sequence[Unit],
    device: str | torch.device, advance: Callable[[int], None], backend: str = "local",
    keep: dict[str, pa.Table] | None = None, **ray: Any,
) -> None:
    """Run ``units`` of ``plan`` into ``out``: here with ``evaluator`` (``keep``: each unit's
    records kept too, by unit id), or over Ray workers."""
    if not units:
        return
    if backend == "local":
        run_units(evaluator, plan, out, units, advance, keep)
        return
    from headstrong.campaign.ray_backend import run_units_on_ray

    run_units_on_ray(model, plan, out, units, device, advance, **ray)


# ------------------------------------------------------------------------------------ the whole run


def run_campaign(
    model: torch.nn.Module,
    data: Any,
    spec: CampaignSpec,
    device: str | torch.device = "cpu",
    out: str | Path | None = None,
    *,
    backend: str = "local",
    batch_size: int | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    num_workers: int | None = None,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
) -> CampaignResult:
    """Run (or resume) a campaign; records go to Parquet chunks under ``out``.

    The same spec and seed give the same records whatever the backend, device count, batch size
    or interruptions. With ``out=None`` the records live in a temporary folder and only in memory.
    The run holds ``out`` for its whole duration: a second run on it is refused. A stratified
    campaign runs in rounds; ``on_round(round, {layer: strata.Allocation})`` hears after each
    where every layer stands (half-width against its goal, faults spent, the next round's).
    """
    if not isinstance(spec, CampaignSpec):
        raise ValueError(f"spec must be a CampaignSpec; got {type(spec).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None (default); got {value!r}")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    folder = None if out is None else storage.check_out_dir(out).absolute()
    images, labels = planning.collect_images(data, spec.max_images)
    evaluator = make_evaluator(model, spec, images, labels, device, batch_size or DEFAULT_BATCH)
    layout = _stored_layout(folder)
    batch_size = _layout_value("batch_size", batch_size, layout, DEFAULT_BATCH, folder)
    chunk_size = _layout_value("chunk_size", chunk_size, layout, DEFAULT_CHUNK, folder)
    plan = plan_campaign(model, evaluator, spec, images, labels, batch_size, chunk_size)
    with _run_folder(folder) as where:
        previous = storage.read_manifest(where)
        if spec.stratified:  # the rounds run so far, as stored: the allocation each one made
            plan = _with_rounds(plan, (previous or {}).get("rounds", {}), chunk_size)
        manifest = _manifest(model, plan, chunk_size)
        if previous is not None:
            _check_same_campaign(previous, manifest, where)
        else:
            storage.write_manifest(where, manifest)
        storage.remove_temporaries(where)
        ray = {"address": ray_address, "num_workers": num_workers}
        kept: dict[str, pa.Table] = {}  # the records this run wrote, by unit (local backend)
        if spec.stratified:
            _run_rounds(model, evaluator, plan, where, manifest, chunk_size, device, progress, backend, ray, on_round)
        else:
            todo = [Unit.from_dict(u) for u in storage.pending_units(where, manifest["units"])]
            with campaign_progress(progress, plan.n_pairs, plan.n_pairs - sum(u.rows for u in todo)) as advance:
                execute(model, evaluator, plan, where, todo, device, advance, backend, kept, **ray)
        result = load_results(where, kept)
    return result if folder is not None else dataclasses.replace(result, out=None)


def _with_rounds(plan: Plan, rounds: dict[str, list[list[int]]], chunk_size: int) -> Plan:
    """A stratified plan with the stored rounds replayed: each round's faults and units, as first planned."""
    for number in range(max((len(r) for r in rounds.values()), default=0)):  # round by round, as they ran
        plan = _next_round(plan, {name: r[number] for name, r in rounds.items() if number < len(r)}, chunk_size)
    return plan


def _run_rounds(model: torch.nn.Module, evaluator: FaultEvaluator, plan: Plan, where: Path, manifest: dict[str, Any],
                chunk_size: int, device: str | torch.device, progress: bool, backend: str, ray: dict[str, Any],
                on_round: Callable[[int, dict[str, Any]], None] | None) -> None:
    """A stratified campaign: run the pending units, then plan the next round of every layer from
    the stored records (``strata.allocate``, a pure function of them) until every layer is done.
    The manifest gains each round before it runs, so a resumed run replays the same rounds; on Ray
    the same workers serve every round."""
    rule = plan.spec.stopping_rule()
    number = max((len(layer.rounds) for layer in plan.layers), default=0)
    with contextlib.ExitStack() as stack:
        pool = None
        if backend == "ray":
            from headstrong.campaign.ray_backend import RayPool

            pool = RayPool(model, plan, where, device, **ray)
            stack.callback(pool.close)
        while True:
            todo = [Unit.from_dict(u) for u in storage.pending_units(where, manifest["units"])]
            rows = sum(u.rows for u in todo)
            with campaign_progress(progress and rows > 0, rows, 0) as advance:
                if pool is None:
                    execute(model, evaluator, plan, where, todo, device, advance)
                elif todo:
                    pool.run(plan, todo, advance)
            steps = _allocate(plan, where, manifest["units"], rule)
            if on_round is not None:
                on_round(number, steps)
            if all(step.done for step in steps.values()):
                _say_budget(steps, rule)
                return
            plan = _next_round(plan, {name: step.counts for name, step in steps.items() if not step.done}, chunk_size)
            manifest = {**manifest, "units": [unit.to_dict() for unit in plan.units],
                        "rounds": {layer.name: [list(r) for r in layer.rounds] for layer in plan.layers}}
            storage.write_manifest(where, manifest)
            number += 1


def _allocate(plan: Plan, where: Path, units: list[dict[str, Any]], rule: Any) -> dict[str, Any]:
    """Each layer's next round (``strata.Allocation``) from its records stored so far."""
    from headstrong.faults.strata import Strata, allocate

    columns = ("bit", "delta_loss", "golden_pred", "faulty_pred", "nonfinite", "fault_id")
    records = storage.read_records(where, units) if units else pd.DataFrame({c: [] for c in columns})
    steps = {}
    for layer in plan.layers:
        strata = Strata(layer.name, layer.elements, layer.bits)
        mine = records[records["layer"] == layer.name] if len(records) else records
        steps[layer.name] = allocate(rule, strata, strata.stats(
            mine["bit"], mine["delta_loss"], mine["golden_pred"] != mine["faulty_pred"], mine["nonfinite"],
            mine["fault_id"]))
    return steps


def _next_round(plan: Plan, counts: dict[str, Sequence[int]], chunk_size: int) -> Plan:
    """The plan grown by one round for the layers in ``counts`` (faults per bit), with their units."""
    layers, units = [], []
    for layer in plan.layers:
        if layer.name in counts:
            before = layer.n_faults
            layer = layer.with_round(counts[layer.name])
            units += planning.layer_units(layer, before, chunk_size, plan.images_per_fault)
        layers.append(layer)
    return dataclasses.replace(plan, layers=tuple(layers)).with_units(units)


def _say_budget(steps: dict[str, Any], rule: Any) -> None:
    """A layer that spent its budget before reaching the margin is said so (its interval is wider)."""
    import warnings

    short = [f"{name} (half-width {step.half_width:.3g} > {step.goal:.3g})"
             for name, step in steps.items() if step.status == "budget"]
    if short:
        warnings.warn(f"max_faults={rule.max_faults} spent before the {rule.target} interval reached the margin in "
                      f"{len(short)} layer(s): {', '.join(short)}; their intervals are wider than asked", stacklevel=3)


@contextlib.contextmanager
def _run_folder(folder: Path | None) -> Iterator[Path]:
    """The run folder, held for the run (one run per folder); a temporary one for ``out=None``."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="headstrong-") as tmp:
            yield Path(tmp)
        return
    from headstrong._lock import hold_folder

    with hold_folder(folder, "inject") as held:
        yield held


def _stored_layout(folder: Path | None) -> dict[str, int]:
    previous = storage.read_manifest(folder) if folder is not None and folder.is_dir() else None
    return dict((previous or {}).get("layout", {}))


def _manifest(model: torch.nn.Module, plan: Plan, chunk_size: int) -> dict[str, Any]:
    return {
        "headstrong_version": __version__,
        "spec": plan.spec.to_dict(),
        "model_fingerprint": planning.model_fingerprint(model),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "data_fingerprint": planning.tensor_fingerprint(plan.images, plan.labels),
        "layout": {"batch_size": plan.batch_size, "chunk_size": chunk_size},
        "layers": [layer.name for layer in plan.layers],
        "bits": list(plan.layers[0].bits) if plan.layers else [],
        "n_images": int(plan.images.shape[0]),
        "n_eval_images": int(plan.eval_samples.shape[0]),
        "images_per_fault": plan.images_per_fault,
        "units": [unit.to_dict() for unit in plan.units],
        **({"rounds": {layer.name: [list(r) for r in layer.rounds] for layer in plan.layers}}
           if plan.spec.stratified else {}),
    }


def _layout_value(name: str, given: int | None, layout: dict[str, int], default: int, out: Path | None) -> int:
    stored = layout.get(name)
    if stored is not None and given is not None and given != stored:
        raise ValueError(
            f"{name}={given} differs from the {name}={stored} the run in {str(out)!r} was started with; "
            f"leave it out to resume, or use a new out"
        )
    return int(stored if stored is not None else given if given is not None else default)


def _check_same_campaign(previous: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    differences = []
    if previous.get("spec") != current["spec"]:
        keys = sorted(set(previous.get("spec", {})) | set(current["spec"]))
        changed = [k for k in keys if previous.get("spec", {}).get(k) != current["spec"].get(k)]
        differences.append(f"the spec ({', '.join(changed)})")
    if previous.get("model_fingerprint") != current["model_fingerprint"]:
        differences.append(f"the model ({previous.get('model_class')} there, {current['model_class']} now)")
    if previous.get("data_fingerprint") != current["data_fingerprint"]:
        differences.append("the data")
    if not differences and previous.get("images_per_fault", 1) != current["images_per_fault"]:
        differences.append(
            f"the images per fault ({previous.get('images_per_fault', 1)} there, {current['images_per_fault']} now; "
            "a run from before images_per_fault met one image per fault, permanent faults now meet every one)"
        )
    if not differences and previous.get("units") != current["units"]:
        differences.append("the planned faults (another headstrong version?)")
    if differences:
        raise ValueError(
            f"{str(out)!r} holds a different campaign: {'; '.join(differences)} differ(s); "
            "rerun with the same spec, model and data to resume, or choose a new out"
        )


# ------------------------------------------------------------------------------------ load


def load_results(out: str | Path, fresh: dict[str, pa.Table] | None = None) -> CampaignResult:
    """Read a finished run: records and summaries. Errors name a missing or damaged chunk.

    ``fresh``: records this process has just written, by unit id; when they cover every unit
    they are the records (the same as reading the chunks back, without the read)."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{str(out)!r} is not a campaign folder (no such directory)")
    manifest = storage.read_manifest(out)
    if manifest is None:
        raise ValueError(f"{str(out)!r} holds no {storage.MANIFEST}: not a headstrong campaign folder")
    ids = [unit["id"] for unit in manifest["units"]]
    if fresh and all(i in fresh for i in ids):
        records = pa.concat_tables([fresh[i] for i in ids]).to_pandas()
    else:
        records = storage.read_records(out, manifest["units"])
    return CampaignResult(CampaignSpec.from_dict(manifest["spec"]), out, records, manifest)


def _summary(records: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """Rows in the model's forward order, with each layer's position among the injectable layers."""
    from headstrong.metrics import summarize

    positions = records.groupby("layer", sort=False)["layer_pos"].first()
    frame = summarize(records, by=by)
    frame = frame.reset_index() if "layer" not in frame.columns else frame
    frame = frame.assign(layer_pos=frame["layer"].map(positions).astype("int64"))
    keys = ["layer_pos"] + (["bit"] if "bit" in frame.columns else [])
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)

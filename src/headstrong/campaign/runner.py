"""Running a campaign: check everything, plan it, store it chunk by chunk, resume, summarise.

Nothing is written under ``out`` until the spec, data, model and layer selection are known to be
good and any earlier run found there is the same campaign, so a bad call never touches stored
results.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import pyarrow as pa
import torch

from headstrong import __version__
from headstrong.campaign import plan as planning
from headstrong.campaign import storage
from headstrong.campaign.progress import campaign_progress
from headstrong.campaign.spec import CampaignSpec, resolve_bits, select_layers

BACKENDS = ("local", "ray")
DEFAULT_CHUNK = 2048
DEFAULT_BATCH = 256

RECORD_COLUMNS = (
    "fault_id", "kind", "layer", "layer_pos", "index", "bit", "sample", "label", "golden_pred",
    "faulty_pred", "golden_loss", "faulty_loss", "delta_loss", "top2_diff", "nonfinite",
)  # fmt: skip


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


@dataclass
class Job:
    """Everything a worker needs besides the model, to run any of the campaign's units."""

    spec: CampaignSpec
    plans: dict[str, planning.LayerPlan]
    images: torch.Tensor  # the considered images, profiled once; eval images index into them
    labels: torch.Tensor
    eval_samples: torch.Tensor  # positions (in the data) of the evaluation images
    batch_size: int
    out: Path


def make_evaluator(model: torch.nn.Module, job: Job, device: str | torch.device) -> Any:
    """The engine's fast core, profiled over all considered images (independent of batching)."""
    from headstrong.engine import FaultEvaluator

    evaluator = FaultEvaluator(model, fmt=job.spec.fmt, range_detector=job.spec.range_detector, device=device)
    evaluator.profile(
        (job.images[i : i + job.batch_size], job.labels[i : i + job.batch_size])
        for i in range(0, job.images.shape[0], job.batch_size)
    )
    if job.spec.fault_model != "flip":  # the planned sites become the model's faults
        from headstrong.engine.edit_evaluator import FaultModelEvaluator

        return FaultModelEvaluator(evaluator, job.spec.fault_model_object(), job.spec.seed)
    return evaluator


def run_units(
    evaluator: Any, job: Job, units: Sequence[dict[str, Any]], advance: Callable[[int], None] | None = None
) -> None:
    """Evaluate and store each unit; ``advance(n)`` after every batch of n faults."""
    from headstrong.faults import FaultSet

    n_eval = job.eval_samples.shape[0]
    eval_x = job.images[job.eval_samples]
    eval_y = job.labels[job.eval_samples]
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for unit in units:
        plan = job.plans[unit["layer"]]
        if plan.name not in cache:
            cache.clear()  # units come layer by layer: keep one layer's faults at a time
            cache[plan.name] = planning.layer_faults(job.spec, plan)
        indices, bits = cache[plan.name]
        parts = []
        for start, stop in _batches(unit["start"], unit["stop"], n_eval, job.batch_size):
            first = start % n_eval
            x = eval_x[first : first + stop - start]
            y = eval_y[first : first + stop - start]
            faults = FaultSet(job.spec.kind, plan.name, indices[start:stop], bits[start:stop])
            outcome = evaluator.evaluate(x, y, faults)
            parts.append(_records(job, plan, start, stop, first, indices, bits, outcome))
            if advance is not None:
                advance(stop - start)
        storage.write_chunk(job.out, unit["id"], pa.Table.from_pandas(pd.concat(parts), preserve_index=False))


def _batches(start: int, stop: int, n_eval: int, batch_size: int) -> list[tuple[int, int]]:
    """Fault ranges that each map onto one contiguous, block-aligned slice of the eval images."""
    out = []
    k = start
    while k < stop:
        position = k % n_eval
        block_end = min((position // batch_size + 1) * batch_size, n_eval)
        end = min(stop, k + block_end - position)
        out.append((k, end))
        k = end
    return out


def _records(
    job: Job,
    plan: planning.LayerPlan,
    start: int,
    stop: int,
    first: int,
    indices: torch.Tensor,
    bits: torch.Tensor,
    outcome: dict[str, torch.Tensor],
) -> pd.DataFrame:
    n = stop - start
    frame = {
        "fault_id": (plan.fault_offset + torch.arange(start, stop)).numpy(),
        "kind": [job.spec.kind] * n,
        "layer": [plan.name] * n,
        "layer_pos": [plan.position] * n,
        "index": indices[start:stop].numpy(),
        "bit": bits[start:stop].numpy().astype("int16"),
        "sample": job.eval_samples[first : first + n].numpy(),
        "label": job.labels[job.eval_samples[first : first + n]].numpy(),
    }
    for key in ("golden_pred", "faulty_pred", "golden_loss", "faulty_loss", "delta_loss", "top2_diff", "nonfinite"):
        frame[key] = outcome[key].detach().cpu().numpy()
    columns = list(RECORD_COLUMNS)
    if "masked" in outcome:  # fault models other than flip: the pair changed no bit
        frame["masked"] = outcome["masked"].detach().cpu().numpy()
        columns.append("masked")
    return pd.DataFrame(frame, columns=columns)


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
) -> CampaignResult:
    """Run (or resume) a campaign; records go to Parquet chunks under ``out``.

    The same spec and seed give the same records whatever the backend, device count, batch size
    or interruptions. With ``out=None`` the records live in a temporary folder and only in memory.
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
    if out is None:
        with tempfile.TemporaryDirectory(prefix="headstrong-") as tmp:
            result = run_campaign(
                model, data, spec, device, tmp, backend=backend, batch_size=batch_size, chunk_size=chunk_size,
                progress=progress, ray_address=ray_address, num_workers=num_workers,
            )  # fmt: skip
            result.out = None
            return result
    out = storage.check_out_dir(out).absolute()
    previous = storage.read_manifest(out) if out.is_dir() else None
    layout = (previous or {}).get("layout", {})
    batch_size = _layout_value("batch_size", batch_size, layout, DEFAULT_BATCH, out)
    chunk_size = _layout_value("chunk_size", chunk_size, layout, DEFAULT_CHUNK, out)

    images, labels = planning.collect_images(data, spec.max_images)
    job = Job(spec, {}, images, labels, torch.arange(images.shape[0]), batch_size, out)
    evaluator = make_evaluator(model, job, device)
    from headstrong.engine import injectable_layers
    from headstrong.formats import get as get_format

    fmt = get_format(spec.fmt)
    bits = resolve_bits(spec, fmt)
    first = next(iter(model.parameters()), None)
    probe = images[:2].to(first.device if first is not None else "cpu")
    available = [name for name in injectable_layers(model, probe) if name in set(evaluator.layer_info["layer"])]
    layers = select_layers(spec, available)
    info = evaluator.layer_info.set_index("layer")
    column = "n_neurons" if spec.kind == "neuron" else "n_weights"
    elements = {name: int(info.loc[name, column]) for name in layers}
    empty = [name for name in layers if elements[name] < 1]
    if empty:
        raise ValueError(f"layer(s) {', '.join(empty)} have no {spec.kind} fault sites; choose other layers")
    job.eval_samples = _eval_samples(evaluator, job)
    plans = planning.plan_layers(
        spec, layers, {n: i for i, n in enumerate(available)}, elements, bits, _sample_size()
    )
    job.plans = {p.name: p for p in plans}
    units = planning.make_units(plans, chunk_size)
    manifest = {
        "headstrong_version": __version__,
        "spec": spec.to_dict(),
        "model_fingerprint": planning.model_fingerprint(model),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "data_fingerprint": planning.tensor_fingerprint(images, labels),
        "layout": {"batch_size": batch_size, "chunk_size": chunk_size},
        "layers": layers,
        "bits": bits,
        "n_images": int(images.shape[0]),
        "n_eval_images": int(job.eval_samples.shape[0]),
        "units": units,
    }
    if previous is not None:
        _check_same_campaign(previous, manifest, out)
    else:
        storage.write_manifest(out, manifest)
    storage.remove_temporaries(out)
    todo = storage.pending_units(out, units)
    total = sum(u["stop"] - u["start"] for u in units)
    remaining = sum(u["stop"] - u["start"] for u in todo)
    with campaign_progress(progress, total, total - remaining) as advance:
        if todo and backend == "local":
            run_units(evaluator, job, todo, advance)
        elif todo:
            from headstrong.campaign.ray_backend import run_units_on_ray

            run_units_on_ray(model, job, todo, device, advance, address=ray_address, num_workers=num_workers)
    return load_results(out)


def _layout_value(name: str, given: int | None, layout: dict[str, int], default: int, out: Path) -> int:
    stored = layout.get(name)
    if stored is not None and given is not None and given != stored:
        raise ValueError(
            f"{name}={given} differs from the {name}={stored} the run in {str(out)!r} was started with; "
            f"leave it out to resume, or use a new out"
        )
    return int(stored if stored is not None else given if given is not None else default)


def _eval_samples(evaluator: Any, job: Job) -> torch.Tensor:
    """Positions of the evaluation images: all of them, or those the golden model gets right."""
    n = job.images.shape[0]
    if not job.spec.only_correct:
        return torch.arange(n)
    preds = []
    for i in range(0, n, job.batch_size):
        golden = evaluator.golden(job.images[i : i + job.batch_size], job.labels[i : i + job.batch_size])
        preds.append(golden_predictions(golden))
    correct = torch.nonzero(torch.cat(preds).cpu() == job.labels).flatten()
    if correct.numel() == 0:
        raise ValueError(
            f"the golden model classifies none of the {n} images correctly, so only_correct leaves nothing "
            "to evaluate; check the model and data set, or set only_correct=False"
        )
    return correct


def golden_predictions(golden: Any) -> torch.Tensor:
    """The predicted classes from the engine's golden pass (logits or a dict holding them)."""
    if isinstance(golden, dict):
        if "golden_pred" in golden:
            return golden["golden_pred"]
        if "pred" in golden:
            return golden["pred"]
        golden = golden["logits"]
    if isinstance(golden, (tuple, list)):
        golden = golden[0]
    return golden.argmax(dim=-1)


def _sample_size() -> Callable[[int, float, float], int]:
    from headstrong.faults import sample_size

    return lambda population, margin, confidence: int(sample_size(population, margin, confidence))


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
    if not differences and previous.get("units") != current["units"]:
        differences.append("the planned faults (another headstrong version?)")
    if differences:
        raise ValueError(
            f"{str(out)!r} holds a different campaign: {'; '.join(differences)} differ(s); "
            "rerun with the same spec, model and data to resume, or choose a new out"
        )


def load_results(out: str | Path) -> CampaignResult:
    """Read a finished run: records and summaries. Errors name a missing or damaged chunk."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{str(out)!r} is not a campaign folder (no such directory)")
    manifest = storage.read_manifest(out)
    if manifest is None:
        raise ValueError(f"{str(out)!r} holds no {storage.MANIFEST}: not a headstrong campaign folder")
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

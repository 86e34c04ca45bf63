"""``headstrong inject``: run (or resume) a fault-injection campaign and store its records."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from headstrong.cli._options import device_option, setup_compute, threads_option

# Bytes a planned fault costs in memory: its index and bit, and its stored record's columns.
_BYTES_PER_FAULT = 256


def build_spec(spec_file: Optional[Path], options: dict[str, Any]) -> Any:
    """The spec from a TOML file (if any), overridden by the options given on the command line."""
    from headstrong.campaign import CampaignSpec

    values = CampaignSpec.from_toml(spec_file).to_dict() if spec_file is not None else {}
    for key, value in options.items():
        if value is not None:
            values[key] = value
    return CampaignSpec.from_dict(values)


def parse_layers(text: Optional[str]) -> Any:
    """'all', a glob, one name, or names separated by commas."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--layers is empty; give 'all', a glob such as 'layer1.*' or layer names separated by commas")
    return names[0] if len(names) == 1 else names


def parse_images_per_fault(text: Optional[str]) -> Any:
    """'all' or a positive number of images."""
    if text is None or text.strip() == "all":
        return None if text is None else "all"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--images-per-fault {text!r} is not understood; give all or a positive number such as 16") from None


def parse_bits(text: Optional[str]) -> Any:
    """'all', 'sign', 'exponent', 'mantissa', or bit positions separated by commas."""
    if text is None:
        return None
    text = text.strip()
    if text in ("all", "sign", "exponent", "mantissa"):
        return text
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--bits {text!r} is not understood; give all, sign, exponent, mantissa or positions such as 23,30"
        ) from None


def load_model(name: str, dataset: str, num_classes: Optional[int], in_chans: Optional[int]) -> Any:
    """A model from a checkpoint file, or an untrained torchvision/timm/headstrong backbone by name."""
    from headstrong.data import dataset_info

    info = dataset_info(dataset)
    if Path(name).is_file() or name.endswith((".pt", ".pth", ".ckpt")):
        from headstrong.train import load_checkpoint

        model, _ = load_checkpoint(name)
        return model
    from headstrong.cli._options import named_model

    classes = num_classes if num_classes is not None else info.num_classes
    chans = in_chans if in_chans is not None else info.in_chans
    model = named_model(name, classes, chans, info.image_size)
    typer.echo(f"warning: {name} is a model name, not a checkpoint: its weights are random (untrained)", err=True)
    return model


def check_model_fits(model: Any, data: Any) -> None:
    """One image through the model: a checkpoint of the wrong shape fails here, clearly."""
    import torch

    x, y = data[0]
    x = torch.as_tensor(x).unsqueeze(0).float()
    try:
        with torch.no_grad():
            logits = model.eval()(x)
    except RuntimeError as error:
        raise ValueError(
            f"the model does not accept this data set's images (shape {tuple(x.shape[1:])}): {str(error).splitlines()[0]}"
        ) from None
    labels = data.targets if hasattr(data, "targets") else None
    top = int(torch.as_tensor(labels).max()) if labels is not None else int(y)
    if logits.ndim != 2 or logits.shape[1] <= top:
        raise ValueError(
            f"the model gives {tuple(logits.shape[1:])} outputs per image but the data set has labels up to {top}; "
            "use a checkpoint trained on this data set or set --num-classes"
        )


def check_fault_budget(model: Any, data: Any, spec: Any) -> None:
    """Refuse --n-faults above what even the largest selected layer can draw without repeating a
    (fault, image) pair, or above what memory can hold, before a manifest of millions of units is
    written. Smaller layers may repeat faults: a sample with replacement is still unbiased."""
    import os

    import torch

    from headstrong import formats
    from headstrong.campaign.spec import resolve_bits, select_layers
    from headstrong.engine import injectable_layers

    if spec.n_faults is None:
        return
    x = torch.as_tensor(data[0][0]).unsqueeze(0).float()
    layers = select_layers(spec, injectable_layers(model, x))
    modules = dict(model.named_modules())
    sizes: dict[str, int] = {}

    def count(name: str) -> Any:
        def hook(module: Any, args: Any, out: Any) -> None:  # returns None: the output is left as it is
            sizes.setdefault(name, out[0].numel())
        return hook

    hooks = [modules[n].register_forward_hook(count(n)) for n in layers]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    bits = resolve_bits(spec, formats.get(spec.fmt))
    strata = len(bits) if spec.per_bit else 1
    # A neuron fault is transient: each one meets one image, so (site, image) pairs are what can differ.
    images = min(len(data), spec.max_images or len(data)) if spec.kind == "neuron" else 1
    sites = {n: (sizes.get(n, 0) if spec.kind == "neuron" else modules[n].weight.numel()) * len(bits) // strata
             for n in layers}
    widest = max(layers, key=lambda n: sites[n])
    if spec.fault_model != "metadata" and spec.n_faults > sites[widest] * images:
        per = " per bit" if spec.per_bit else ""
        pairs = f" x {images:,} images = {sites[widest] * images:,} (fault, image) pairs" if images > 1 else ""
        raise ValueError(
            f"--n-faults {spec.n_faults:,}{per} is more than any selected layer can draw without repeating: "
            f"the largest, {widest!r}, has {sites[widest]:,} fault sites{per}{pairs}; "
            "give at most that, or leave --n-faults out for the Leveugle sample size"
        )
    total = spec.n_faults * strata * len(layers)
    # every (fault, image) pair is a record: a permanent fault meets all evaluation images by default
    n_images = min(len(data), spec.max_images or len(data))
    pairs = total * min(spec.images_per_fault_for(n_images), n_images)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if pairs * _BYTES_PER_FAULT > available // 2:
        met = f" meeting {pairs // total:,} images each = {pairs:,} records" if pairs > total else ""
        raise ValueError(
            f"--n-faults {spec.n_faults:,} plans {total:,} faults{met} (about {pairs * _BYTES_PER_FAULT / 2**30:,.1f} "
            f"GiB), more than half of the {available / 2**30:,.1f} GiB of free memory; give fewer faults, fewer "
            "layers, fewer --max-images or a smaller --images-per-fault"
        )


def inject(
    model: str = typer.Argument(..., help="A checkpoint file, or a torchvision/timm/headstrong backbone name."),
    dataset: str = typer.Option("fashion-mnist", "--dataset", help="Data set name (see headstrong.data)."),
    split: str = typer.Option("test", "--split", help="Which split of the data set to evaluate on."),
    out: Path = typer.Option(..., "--out", help="Run folder; rerun with the same folder to resume."),
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="Campaign spec in TOML; options given here override it."),
    kind: Optional[str] = typer.Option(None, "--kind", help="neuron or weight (default neuron)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="all, a glob ('layer1.*') or names separated by commas."),
    fmt: Optional[str] = typer.Option(None, "--fmt", help="Number format: fp32 fp16 bf16 fp8_e4m3 int8 ... (default fp32)."),
    bits: Optional[str] = typer.Option(None, "--bits", help="all, sign, exponent, mantissa or positions (23,30)."),
    n_faults: Optional[int] = typer.Option(None, "--n-faults", help="Faults per layer (uniform); default: sized by --margin."),
    margin: Optional[float] = typer.Option(None, "--margin", help="Interval half-width to reach, in (0, 1) (default 0.01)."),
    confidence: Optional[float] = typer.Option(None, "--confidence", help="Confidence of that interval (default 0.99)."),
    sampling: Optional[str] = typer.Option(
        None, "--sampling", help="stratified (pilot, Neyman rounds by bit, stops at --margin) or uniform (Leveugle or "
        "--n-faults) [default: stratified without --n-faults].",
    ),
    target: Optional[str] = typer.Option(
        None, "--target", help="What --margin is on when stratified: mismatch (absolute) or delta_loss (relative) "
        "[default: mismatch].",
    ),
    max_faults: Optional[int] = typer.Option(None, "--max-faults", help="A stratified layer's budget (default 102,400)."),
    per_bit: Optional[bool] = typer.Option(None, "--per-bit/--per-layer", help="Size the sample per bit stratum."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the fault sampler (default 0)."),
    only_correct: Optional[bool] = typer.Option(
        None, "--only-correct/--all-images", help="Evaluate only images the golden model gets right (default on)."
    ),
    range_detector: Optional[bool] = typer.Option(None, "--range-detector/--no-range-detector", help="Clamp flipped activations to the profiled range (default on)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Consider the first N images only."),
    fault_model: Optional[str] = typer.Option(
        None, "--fault-model", help="flip, stuck-at-0, stuck-at-1, multi-bit, multi-site, ber, metadata, zero, random-value, or a name given to "
        "register_fault_model [default: flip]."
    ),
    ber: Optional[float] = typer.Option(None, "--ber", help="Bit-error rate p of --fault-model ber, in [0, 1]."),
    k: Optional[int] = typer.Option(None, "--k", help="Bits per fault of --fault-model multi-bit."),
    sites: Optional[int] = typer.Option(None, "--sites", help="Faults per inference of --fault-model multi-site."),
    images_per_fault: Optional[str] = typer.Option(
        None, "--images-per-fault",
        help="Eval images each fault meets: N or all [default: all for weight and stuck-at faults, 1 for neuron flips].",
    ),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classes of a model given by name."),
    in_chans: Optional[int] = typer.Option(None, "--in-chans", help="Input channels of a model given by name."),
    device: str = device_option(),
    threads: Optional[int] = threads_option(),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Existing Ray cluster ('auto' or host:port); default: $RAY_ADDRESS or a local one."
    ),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Ray workers; default: one per CPU (or GPU) slot."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Faults per engine batch (default 256)."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=1, help="Faults per stored chunk (default 2048)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Inject single-bit faults into a model, layer by layer, and store every outcome under --out."""
    from headstrong.campaign import run_campaign
    from headstrong.campaign.storage import check_out_dir

    device = setup_compute(device, threads)
    check_out_dir(out)
    spec = build_spec(spec_file, {
        "kind": kind, "layers": parse_layers(layers), "fmt": fmt, "bits": parse_bits(bits),
        "n_faults": n_faults, "margin": margin, "confidence": confidence, "per_bit": per_bit, "seed": seed,
        "only_correct": only_correct, "range_detector": range_detector, "max_images": max_images,
        "fault_model": fault_model, "ber": ber, "k": k, "sites": sites,
        "images_per_fault": parse_images_per_fault(images_per_fault),
        "sampling": sampling, "target": target, "max_faults": max_faults,
    })  # fmt: skip
    from headstrong.data import load_dataset

    data = load_dataset(dataset, split=split)
    net = load_model(model, dataset, num_classes, in_chans)
    check_model_fits(net, data)
    check_fault_budget(net, data, spec)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        result = run_campaign(
            net, data, spec, device=device, out=out, backend=backend, batch_size=batch_size,
            chunk_size=chunk_size, progress=progress, ray_address=ray_address,
            num_workers=workers, on_round=say_round if progress and spec.stratified else None,
        )  # fmt: skip
    finish_run(result, model)
    if spec.stratified:
        typer.echo(faults_table(result))
    for warning in said:
        typer.echo(f"warning: {warning.message}", err=True)


def say_round(number: int, steps: dict[str, Any]) -> None:
    """A stratified campaign's progress: where the widest layer's half-width stands against its goal."""
    running = {name: step for name, step in steps.items() if not step.done}
    spent = sum(step.spent for step in steps.values())
    if not running or number == 0:
        typer.echo(f"round {number}: {'pilot' if number == 0 else 'done'}, {spent:,} faults so far", err=True)
        return
    name, step = max(running.items(), key=lambda item: item[1].half_width / max(item[1].goal, 1e-300))
    typer.echo(f"round {number}: {len(running)} of {len(steps)} layers running, {spent:,} faults so far; widest: "
               f"{name} half-width {step.half_width:.4g} vs target {step.goal:.4g}, "
               f"{int(step.counts.sum()):,} more faults", err=True)


def faults_table(result: Any) -> str:
    """The faults each layer of a stratified campaign needed, and the half-width it reached."""
    spec = result.spec
    rows = result.per_layer
    key = "mismatch" if spec.target == "mismatch" else "delta_loss"
    half = (rows[f"{key}_ci_high"] - rows[f"{key}_ci_low"]) / 2
    goal = spec.margin * (1.0 if key == "mismatch" else rows["delta_loss_mean"].abs()) + 0 * half
    width = max(len("layer"), *(len(str(n)) for n in rows["layer"]))
    what = "absolute" if key == "mismatch" else "relative"
    lines = [f"stratified by bit, target {spec.target} ±{spec.margin:g} ({what}) at {spec.confidence:.0%}:",
             f"{'layer':<{width}}  {'faults':>9}  {'half-width':>10}  {'goal':>10}  status"]
    for name, n, h, g in zip(rows["layer"], rows["n_faults"], half, goal):
        lines.append(f"{name:<{width}}  {int(n):>9,}  {h:>10.4g}  {g:>10.4g}  "
                     f"{'reached' if h <= g else 'max_faults spent'}")
    lines.append(f"{'all layers':<{width}}  {int(rows['n_faults'].sum()):>9,}")
    return "\n".join(lines)


def finish_run(result: Any, model: str) -> None:
    """After a campaign: its CSV tables and model name beside the records, the table, any warnings."""
    from headstrong.report.checks import result_warnings
    from headstrong.report.fault_models import record_model
    from headstrong.report.tables import console, layer_table, write_tables

    record_model(result.out, model)
    tables = write_tables(result)
    title = f"{len(result.records):,} (fault, image) pairs evaluated, stored in {result.out}"
    console().print(layer_table(result.per_layer, title=title, only_correct=bool(result.spec.only_correct)))
    typer.echo(f"tables: {', '.join(str(t) for t in tables)}")
    for warning in result_warnings(result):
        typer.echo(f"warning: {warning}", err=True)


def register(app: typer.Typer) -> None:
    """Add the ``inject`` command to the ``headstrong`` app."""
    app.command("inject")(inject)

"""``headstrong inject``: run (or resume) a fault-injection campaign and store its records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


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
    from headstrong.textguided import build_baseline

    classes = num_classes if num_classes is not None else info.num_classes
    chans = in_chans if in_chans is not None else info.in_chans
    model = build_baseline(name, classes, chans, small_input=info.image_size <= 64)
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
    n_faults: Optional[int] = typer.Option(None, "--n-faults", help="Faults per layer; default: Leveugle sample size."),
    margin: Optional[float] = typer.Option(None, "--margin", help="Leveugle error margin, in (0, 1) (default 0.01)."),
    confidence: Optional[float] = typer.Option(None, "--confidence", help="Leveugle confidence (default 0.99)."),
    per_bit: Optional[bool] = typer.Option(None, "--per-bit/--per-layer", help="Size the sample per bit stratum."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the fault sampler (default 0)."),
    only_correct: Optional[bool] = typer.Option(
        None, "--only-correct/--all-images", help="Evaluate only images the golden model gets right (default on)."
    ),
    range_detector: Optional[bool] = typer.Option(None, "--range-detector/--no-range-detector", help="Clamp flipped activations to the profiled range (default on)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Consider the first N images only."),
    fault_model: Optional[str] = typer.Option(
        None, "--fault-model", help="flip, stuck-at-0, stuck-at-1, multi-bit, multi-site, ber, metadata [default: flip]."
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
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ..."),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Existing Ray cluster ('auto' or host:port); default: $RAY_ADDRESS or a local one."
    ),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray workers; default: one per CPU (or GPU) slot."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Faults per engine batch (default 256)."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Faults per stored chunk (default 2048)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Inject single-bit faults into a model, layer by layer, and store every outcome under --out."""
    from headstrong.campaign import run_campaign
    from headstrong.campaign.storage import check_out_dir

    check_out_dir(out)
    spec = build_spec(spec_file, {
        "kind": kind, "layers": parse_layers(layers), "fmt": fmt, "bits": parse_bits(bits),
        "n_faults": n_faults, "margin": margin, "confidence": confidence, "per_bit": per_bit, "seed": seed,
        "only_correct": only_correct, "range_detector": range_detector, "max_images": max_images,
        "fault_model": fault_model, "ber": ber, "k": k, "sites": sites,
        "images_per_fault": parse_images_per_fault(images_per_fault),
    })  # fmt: skip
    from headstrong.data import load_dataset

    data = load_dataset(dataset, split=split)
    net = load_model(model, dataset, num_classes, in_chans)
    check_model_fits(net, data)
    result = run_campaign(
        net, data, spec, device=device, out=out, backend=backend, batch_size=batch_size,
        chunk_size=chunk_size, progress=progress, ray_address=ray_address,
        num_workers=workers,
    )  # fmt: skip
    finish_run(result, model)


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

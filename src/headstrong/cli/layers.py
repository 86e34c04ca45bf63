"""``headstrong layers MODEL``: the injectable layers, with type, output shape, neurons and weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def load_for_listing(name: str, dataset: Optional[str], image_size: Optional[int],
                     num_classes: Optional[int], in_chans: Optional[int]) -> tuple[Any, tuple[int, ...], str]:
    """The model (a checkpoint, or a torchvision/timm/headstrong name: random weights, fine for
    listing), one input's shape and a description of where the shape came from."""
    from headstrong.data import dataset_info

    config: dict = {}
    if Path(name).is_file() or name.endswith((".pt", ".pth", ".ckpt")):
        from headstrong.train import load_checkpoint

        model, config = load_checkpoint(name)
        config = config or {}
    else:
        model = None
    data = dataset or config.get("dataset") or "fashion-mnist"
    info = dataset_info(data)
    side = image_size or config.get("image_size") or info.image_size
    chans = in_chans if in_chans is not None else info.in_chans
    if model is None:
        from headstrong.cli._options import named_model

        model = named_model(name, num_classes if num_classes is not None else info.num_classes, chans, side)
    return model, (chans, side, side), f"{data} images, {chans}x{side}x{side}"


def layers(
    model: str = typer.Argument(..., help="A checkpoint file, or a torchvision/timm/headstrong backbone name."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Data set whose image shape to use (default: the checkpoint's, else fashion-mnist)."
    ),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels (default: the data set's)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classes of a model given by name."),
    in_chans: Optional[int] = typer.Option(None, "--in-chans", help="Input channels of a model given by name."),
) -> None:
    """List the layers faults can target, in forward order: the names --layers takes, and their sizes."""
    import torch

    from headstrong.report.model_layers import describe_layers
    from headstrong.report.tables import console, layer_names_note, rich_table

    if image_size is not None and image_size < 1:
        raise ValueError(f"--image-size {image_size}: must be a positive number of pixels")
    net, shape, source = load_for_listing(model, dataset, image_size, num_classes, in_chans)
    found = describe_layers(net, torch.zeros((1, *shape)))
    rows = [[str(i), info.name, info.type, "x".join(map(str, info.output_shape)), f"{info.neurons:,}", f"{info.weights:,}"]
            for i, info in enumerate(found)]
    rows.append(["", "total", "", "", f"{sum(i.neurons for i in found):,}", f"{sum(i.weights for i in found):,}"])
    caption = " ".join(n for n in (
        "neurons: elements of one image's output (what a neuron fault's index runs over); weights: elements of "
        "the weight tensor (a weight fault's index). Pass names to inject --layers (names, a glob such as "
        "'backbone.layer1.*', or all).", layer_names_note([i.name for i in found])) if n)
    console().print(rich_table(["#", "layer", "type", "output shape", "neurons", "weights"], rows,
                               title=f"{model}: {len(found)} injectable layers in forward order ({source})",
                               caption=caption, key=1))


def register(app: typer.Typer) -> None:
    """Add the ``layers`` command to the ``headstrong`` app."""
    app.command("layers")(layers)

"""``headstrong train``: train a baseline or text-guided classifier with the one recipe."""

from __future__ import annotations

from typing import Optional

import typer

from headstrong.cli._options import check_out_folder, device_option, progress_option, setup_compute, threads_option


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    out: str = typer.Option(..., "--out", help="Run directory: checkpoints go here; rerun to resume."),
    dataset: str = typer.Option("fashion-mnist", help="fashion-mnist, mnist, cifar10, cifar100, stl10, imagefolder:PATH."),
    backbone: str = typer.Option("resnet8-w16", help="Built-in (cnn-small, resnet8-w16, ...), torchvision or timm name."),
    head: str = typer.Option("text", help="baseline or text."),
    init: str = typer.Option("text", help="Text head init: text, name, random, random-linear."),
    encoder: str = typer.Option("minilm", help="minilm, sentence-transformers:NAME, clip:ARCH/TAG, clip:ARCH@FILE."),
    descriptions: Optional[str] = typer.Option(None, help="Description set name or JSON file (default: the data set's)."),
    embeddings: Optional[str] = typer.Option(None, help="Class embeddings written by `headstrong embed`."),
    epochs: int = typer.Option(10, help="Epochs."),
    batch_size: int = typer.Option(128, help="Batch size."),
    lr: float = typer.Option(0.1, help="Peak learning rate (cosine schedule)."),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    weight_decay: float = typer.Option(5e-4, help="Weight decay (not on biases, norms, logit scale)."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing."),
    warmup_epochs: float = typer.Option(0.0, help="Linear warm-up, in epochs."),
    augment: bool = typer.Option(True, help="Random crop and flip."),
    image_size: Optional[int] = typer.Option(None, help="Resize images to this side."),
    small_input: bool = typer.Option(False, help="CIFAR-style stem for ResNets (3x3 stride 1, no max-pool)."),
    freeze_head: bool = typer.Option(False, help="Keep the text head's rows fixed."),
    seed: int = typer.Option(0, help="Seed."),
    limit_train: Optional[int] = typer.Option(None, help="Train on a random subset of this many images."),
    limit_test: Optional[int] = typer.Option(None, help="Evaluate on a random subset of this many images."),
    device: str = device_option(),
    amp: bool = typer.Option(True, help="Mixed precision on CUDA."),
    workers: int = typer.Option(0, help="Data loader workers."),
    data_root: Optional[str] = typer.Option(None, help="Where torchvision data sets live."),
    threads: Optional[int] = threads_option(),
    progress: bool = progress_option(),
) -> None:
    """Train a model; print its test top-1 at the end."""
    setup_compute(device, threads)
    check_out_folder(out)
    from headstrong.train import TrainConfig, train

    config = TrainConfig(
        dataset=dataset, backbone=backbone, head=head, init=init, encoder=encoder,
        descriptions=descriptions, embeddings=embeddings, epochs=epochs, batch_size=batch_size,
        lr=lr, momentum=momentum, weight_decay=weight_decay, label_smoothing=label_smoothing,
        warmup_epochs=warmup_epochs, augment=augment, image_size=image_size,
        small_input=small_input, freeze_head=freeze_head, seed=seed, limit_train=limit_train,
        limit_test=limit_test, device=device, amp=amp, num_workers=workers, data_root=data_root,
        threads=threads,
    )
    result = train(config, out, progress=progress)
    typer.echo(f"top-1 {result.top1:.2f}% ({config.head} {config.backbone} on {config.dataset}); checkpoint {result.checkpoint}")

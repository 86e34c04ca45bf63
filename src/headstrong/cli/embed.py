"""``headstrong embed``: encode a description set into class embeddings, written to a file."""

from __future__ import annotations

from typing import Optional

import typer

from headstrong.cli._options import check_out_file, device_option, setup_compute, threads_option


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)


def embed_command(
    descriptions: str = typer.Option(..., help="Shipped description set (e.g. fashion-mnist) or a JSON file."),
    out: str = typer.Option(..., "--out", help="Output file (.pt: embeddings [C, D], classes, encoder)."),
    encoder: str = typer.Option("minilm", help="minilm, sentence-transformers:NAME, clip:ARCH/TAG, clip:ARCH@FILE, clip:ARCH/random."),
    dataset: Optional[str] = typer.Option(None, help="Check the descriptions cover exactly this data set's classes, in its order."),
    device: str = device_option(),
    threads: Optional[int] = threads_option(),
    cache: bool = typer.Option(True, help="Use the on-disk embedding cache."),
) -> None:
    """Encode class descriptions: one unit row per class, the mean of its descriptions."""
    path = check_out_file(out)
    device = setup_compute(device, threads)
    from headstrong._atomic import atomic_torch_save
    from headstrong.textguided import descriptions as desc_mod
    from headstrong.textguided.encoders import encode_classes

    classes = None
    if dataset is not None:
        from headstrong.data import dataset_info

        classes = list(dataset_info(dataset).classes)
    desc = desc_mod.load(descriptions, classes=classes)
    emb = encode_classes(desc, encoder, classes=classes, cache=cache, device=device)
    atomic_torch_save({"embeddings": emb, "classes": list(desc), "encoder": encoder, "descriptions": descriptions}, path)
    typer.echo(f"wrote {emb.shape[0]} x {emb.shape[1]} class embeddings ({encoder}) to {path}")

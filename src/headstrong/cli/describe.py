"""``headstrong describe``: write a description file with a language model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def describe(
    classes: str = typer.Option(
        ..., "--classes", help="A data set name (cifar10, mnist, ...), a JSON list or a text file, one class per line."
    ),
    model: str = typer.Option(..., "--model", help="Model name the server knows, e.g. llama3.1:8b."),
    base_url: str = typer.Option(
        ..., "--base-url", help="OpenAI-compatible server, e.g. http://localhost:11434/v1 (Ollama)."
    ),
    out: Path = typer.Option(..., "--out", help="Output JSON file; an existing one is resumed."),
    questions: Optional[Path] = typer.Option(
        None, "--questions", help="JSON list or text file of questions containing {class}; default: the shipped six."
    ),
    temperature: float = typer.Option(0.2, "--temperature", min=0.0, max=2.0, help="Sampling temperature."),
    max_retries: int = typer.Option(5, "--max-retries", min=0, help="Retries per request on transient errors."),
    retry_wait: float = typer.Option(
        1.0, "--retry-wait", min=0.0, help="First backoff in seconds; doubles after every failure (at most 30 s)."
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key (local servers need none)."
    ),
    timeout: float = typer.Option(
        60.0, "--timeout", help="Seconds to wait for one answer; a server silent this long twice in a row is given up on."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Ask a language model the description questions for every class and save the answers."""
    from headstrong.cli._options import check_out_file
    from headstrong.textguided import descriptions as desc

    check_out_file(out, example="descriptions.json")
    from headstrong.textguided import llm

    names = desc.class_list(classes)
    asked = desc.question_list(questions) if questions is not None else list(desc.DEFAULT_QUESTIONS)
    retry = llm.RetryPolicy(attempts=max_retries + 1, base=retry_wait)
    result = llm.generate(
        names,
        asked,
        out,
        model=model,
        base_url=base_url,
        api_key_env=api_key_env,
        temperature=temperature,
        retry=retry,
        timeout=timeout,
        dataset=desc.canonical_name(classes),
        progress=progress,
    )
    typer.echo(f"wrote {sum(map(len, result.values()))} answers for {len(result)} classes to {out}")


def register(app: typer.Typer) -> None:
    """Add the ``describe`` command to the ``headstrong`` app."""
    app.command("describe")(describe)

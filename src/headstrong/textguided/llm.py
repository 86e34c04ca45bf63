"""Writing class descriptions with a language model behind any OpenAI-compatible server.

Works with OpenAI itself and with local servers that speak ``/v1/chat/completions`` (vLLM,
Ollama, llama.cpp, LM Studio). Each (class, question) pair is one request. The output file is
rewritten atomically after every answer, so an interrupted run loses at most the request in
flight, and rerunning with the same output file asks only what is still missing.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from headstrong.textguided import descriptions as _desc

SYSTEM_PROMPT = (
    "You describe object classes for an image classifier. Answer the question in one or two "
    "short sentences that are accurate and specific about what the thing looks like in a "
    "photograph: colours, shapes, parts, textures, typical surroundings and the visual cues "
    "that set it apart from similar things. No lists, no preamble, no hedging."
)

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUTS = 2  # a server silent this many times in a row for one question is given up on

# Shapes of secrets a server may echo back: OpenAI-style keys and bearer tokens.
_KEY_SHAPES = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}|(?<=Bearer )[A-Za-z0-9._~+/=\-]{8,}")
REDACTED = "[redacted]"


def redact(text: str, secrets: Sequence[Optional[str]] = ()) -> str:
    """``text`` with each secret, and anything shaped like an API key, replaced by ``[redacted]``.

    Servers sometimes quote the key they were sent in an error message ("Incorrect API key
    provided: sk-..."); such a message must not end up in a terminal or a CI log.
    """
    for secret in secrets:
        if secret and len(secret) >= 4 and secret != "not-needed":
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


class GenerationError(RuntimeError):
    """A request failed for good; the answers gathered so far are already saved."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff: wait ``base * 2**k`` (at most ``cap``) seconds."""

    attempts: int = 5
    base: float = 1.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base < 0 or self.cap < 0:
            raise ValueError(f"backoff times must be >= 0, got base={self.base}, cap={self.cap}")

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** (failures - 1))


def make_client(base_url: str, api_key_env: str = DEFAULT_API_KEY_ENV, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """An ``openai.OpenAI`` client for ``base_url``; the key comes from the environment.

    Local servers usually ignore the key, so a missing variable is not an error. The client's
    own retries are off: :func:`ask` retries with its own bounded, visible policy. ``timeout``:
    seconds to wait for one answer.
    """
    from openai import OpenAI

    if not base_url.strip():
        raise ValueError("base_url is empty; expected the server's URL, e.g. http://localhost:8000/v1")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout {timeout!r}: expected a positive number of seconds")
    key = os.environ.get(api_key_env) or "not-needed"
    return OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)


def _retryable(error: Exception) -> bool:
    """Connection problems, time-outs, rate limits and server errors may pass; the rest will not."""
    import openai

    if isinstance(error, (openai.APIConnectionError, openai.RateLimitError, _EmptyAnswer)):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code >= 500 or error.status_code in (408, 409, 429)
    return False


def _seconds(timeout: Any) -> str:
    """'60 s' for a number (or an httpx.Timeout's read limit); 'the timeout' when unknown."""
    value = getattr(timeout, "read", timeout)
    return f"{value:g} s" if isinstance(value, (int, float)) else "the timeout"


class _EmptyAnswer(Exception):
    """The server answered, but with no text."""


def format_question(template: str, class_name: str) -> str:
    """The question for one class: ``{class}`` replaced by a readable class name."""
    return template.replace(_desc.CLASS_PLACEHOLDER, class_name.replace("_", " "))


def ask(
    client: Any,
    model: str,
    question: str,
    temperature: float = 0.2,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """One answer to one question, retried on transient failures; one line of text.

    A server that stays silent past the client's timeout ``MAX_TIMEOUTS`` times in a row is given up
    on at once (a silent server rarely answers on the fifth try). Error messages never carry the
    client's API key.
    """
    import openai

    secrets = [getattr(client, "api_key", None)]
    failures = timeouts = 0
    while True:
        try:
            response = client.chat.completions.create(
                model=model,
                temperature=temperature,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                ],
            )
            content = response.choices[0].message.content if response.choices else None
            text = " ".join((content or "").split())
            if not text:
                raise _EmptyAnswer("the server returned an empty answer")
            return text
        except Exception as error:  # noqa: BLE001 - sorted into retryable or not just below
            failures += 1
            timeouts = timeouts + 1 if isinstance(error, openai.APITimeoutError) else 0
            said = redact(f"{type(error).__name__}: {error}", secrets)
            if not _retryable(error):
                raise GenerationError(said) from None
            if timeouts >= MAX_TIMEOUTS:
                wait = getattr(client, "timeout", None)
                raise GenerationError(
                    f"the server did not answer within {_seconds(wait)} {timeouts} times in a row ({said}); "
                    "check that it is up and serving the model, or raise --timeout if it is just slow"
                ) from None
            if failures >= retry.attempts:
                raise GenerationError(f"gave up after {failures} attempts; last error {said}") from None
            sleep(retry.delay(failures))


def generate(
    classes: Sequence[str],
    questions: Sequence[str],
    out: os.PathLike | str,
    *,
    model: str,
    base_url: str,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    temperature: float = 0.2,
    retry: RetryPolicy = RetryPolicy(),
    timeout: float = DEFAULT_TIMEOUT,
    dataset: Optional[str] = None,
    progress: bool = True,
    client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, list[str]]:
    """Ask every question about every class and save the answers to ``out``, resumably.

    An existing ``out`` made with the same questions and model is continued: answers already
    in it are kept and not asked again. Raises :class:`GenerationError` when a request fails
    for good, after saving everything answered before it. ``timeout``: seconds to wait for one
    answer (two silent waits in a row end the run).
    """
    classes, questions = list(classes), list(questions)
    if not classes:
        raise ValueError("no classes given; expected at least one class name")
    if not questions:
        raise ValueError("no questions given; expected at least one question containing {class}")
    bad = [q for q in questions if _desc.CLASS_PLACEHOLDER not in q]
    if bad:
        raise ValueError(f"questions without the {{class}} placeholder: {bad}; each must contain {{class}}")
    if not model.strip():
        raise ValueError("model is empty; expected the model name the server knows, e.g. llama3.1:8b")
    generator = f"model {model} via an OpenAI-compatible chat-completions server (headstrong describe)"
    path = Path(out)
    done = _resume(path, classes, questions, generator)
    client = client if client is not None else make_client(base_url, api_key_env, timeout)
    total = len(classes) * len(questions)
    already = sum(len(v) for v in done.values())

    def save(partial: bool) -> None:
        ordered = {c: done[c] for c in classes if done.get(c)}
        _desc.save(ordered, path, questions=questions, dataset=dataset, generator=generator, partial=partial)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from headstrong.campaign.progress import PlainProgress, is_terminal, start_line

    plain = PlainProgress(total, already, sys.stderr, unit="answers") if progress and not is_terminal(None) else None
    if plain is not None:  # a batch job or a redirected log: plain lines, not a bar drawn only at the end
        plain.say(start_line(total, already, "describe", "answers"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress or plain is not None,
                  transient=False) as bar:
        task = bar.add_task("describing", total=total, completed=already)
        for name in classes:
            answers = done.setdefault(name, [])
            for index in range(len(answers), len(questions)):
                bar.update(task, description=f"{name} ({index + 1}/{len(questions)})")
                question = format_question(questions[index], name)
                try:
                    answers.append(ask(client, model, question, temperature, retry, sleep))
                except GenerationError as error:
                    if any(done.values()):
                        save(partial=True)
                    raise GenerationError(
                        f"class {name!r}, question {index + 1} ({question!r}) failed: {error}. "
                        f"{sum(len(v) for v in done.values())} of {total} answers are saved in {path}; "
                        "rerun the same command to continue"
                    ) from error
                save(partial=True)
                bar.advance(task)
                if plain is not None:
                    plain.advance(1)
    if plain is not None and plain.done > plain.start_done:
        plain.say(plain.line() + ": done")
    save(partial=False)
    return {c: done[c] for c in classes}


def _resume(path: Path, classes: list[str], questions: list[str], generator: str) -> dict[str, list[str]]:
    """Answers already in ``path`` (empty if it does not exist), after checking they fit this run."""
    if not path.exists():
        return {}
    previous = _desc.read(path, partial=True)
    if previous.questions is not None and list(previous.questions) != questions:
        raise ValueError(
            f"{path} was written with other questions ({list(previous.questions)}); "
            "expected the same questions to resume; choose another --out or the same --questions"
        )
    if previous.questions is None:
        raise ValueError(f"{path} records no questions, so it cannot be resumed; choose another --out")
    if previous.generator is not None and previous.generator != generator:
        raise ValueError(
            f"{path} was written by {previous.generator!r}; expected {generator!r} to resume; "
            "choose another --out or the same --model"
        )
    unknown = [c for c in previous.classes if c not in classes]
    if unknown:
        raise ValueError(
            f"{path} holds classes that are not being described: {unknown}; "
            "expected a subset of the requested classes; choose another --out"
        )
    return {c: list(a) for c, a in previous.classes.items()}

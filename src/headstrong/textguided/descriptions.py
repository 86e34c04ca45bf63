"""Class descriptions: the text that initialises a text-guided classification head.

A description file is JSON. The full form records how the text was made::

    {"dataset": "cifar10",
     "questions": ["What does a {class} look like?", ...],
     "generator": "written by the headstrong developers",
     "classes": {"airplane": ["answer to question 1", "answer to question 2", ...], ...}}

Each class holds one answer per question, in question order, so every sentence can be traced
back to what was asked. A plain ``{class: [description, ...]}`` mapping is accepted too. The
order of the classes in the file is kept: it is the order of the classifier's outputs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from headstrong._checks import parse_json

PathLike = Union[str, os.PathLike]

DATA_DIR = Path(__file__).resolve().parent / "data"

#: The questions asked for every class of the shipped sets, in the order of the answers.
DEFAULT_QUESTIONS: tuple[str, ...] = (
    "What does a {class} look like?",
    "What shape is a {class}?",
    "What are the parts of a {class}?",
    "What is the texture of a {class}?",
    "Where is a {class} usually seen?",
    "How does a {class} differ from similar things?",
)

#: Placeholder that a question template must contain.
CLASS_PLACEHOLDER = "{class}"

# canonical shipped name -> accepted spellings (compared after lower-casing)
_ALIASES: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "fashionmnist", "fmnist"),
    "mnist": ("mnist",),
    "cifar10": ("cifar10", "cifar-10", "cifar_10"),
    "cifar100": ("cifar100", "cifar-100", "cifar_100"),
    "stl10": ("stl10", "stl-10", "stl_10"),
}


@dataclass(frozen=True)
class DescriptionSet:
    """A description file's content: the answers per class and how they were produced."""

    classes: dict[str, list[str]]
    questions: Optional[tuple[str, ...]] = None
    dataset: Optional[str] = None
    generator: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


def list_shipped() -> list[str]:
    """Names of the description sets shipped with headstrong (usable with :func:`load`)."""
    return [name for name in _ALIASES if (DATA_DIR / f"{name}.json").is_file()]


def canonical_name(name: str) -> Optional[str]:
    """The shipped set a data set name or alias refers to, or None if it names none."""
    key = name.strip().lower()
    for canonical, spellings in _ALIASES.items():
        if key in spellings:
            return canonical
    return None


def _resolve(name_or_path: PathLike) -> Path:
    """Turn a shipped name, an alias or a path into the file to read."""
    text = os.fspath(name_or_path)
    canonical = canonical_name(text)
    if canonical is not None and (DATA_DIR / f"{canonical}.json").is_file():
        return DATA_DIR / f"{canonical}.json"
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise ValueError(
        f"unknown description set {text!r}: no shipped set by that name and no such file; "
        f"expected one of {', '.join(list_shipped())} or the path to a JSON description file"
    )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a class named twice would silently lose one of its lists."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears more than once; each class may appear once")
        out[key] = value
    return out


def _check_answers(source: str, name: Any, answers: Any) -> list[str]:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: class name {name!r} is empty; class names must be non-empty strings")
    if not isinstance(answers, list):
        raise ValueError(
            f"{source}: class {name!r} has a {type(answers).__name__}; expected a list of description strings"
        )
    if not answers:
        raise ValueError(f"{source}: class {name!r} has an empty list; expected at least one description")
    for i, text in enumerate(answers):
        if not isinstance(text, str):
            raise ValueError(
                f"{source}: class {name!r}, description {i} is a {type(text).__name__}; "
                "expected a non-empty string"
            )
        if not text.strip():
            raise ValueError(f"{source}: class {name!r}, description {i} is empty; expected a non-empty string")
    return list(answers)


def _check_questions(source: str, questions: Any) -> tuple[str, ...]:
    if not isinstance(questions, list) or not questions:
        raise ValueError(f"{source}: 'questions' must be a non-empty list of strings, got {questions!r}")
    for q in questions:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{source}: question {q!r} is not a non-empty string; questions must be strings")
    return tuple(questions)


def parse(data: Any, source: str = "<data>", partial: bool = False) -> DescriptionSet:
    """Validate decoded JSON (full or plain form) into a :class:`DescriptionSet`.

    With ``partial=True`` a class may hold fewer answers than there are questions, as in a
    file that an interrupted ``headstrong describe`` left behind.
    """
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{source}: top level is a {type(data).__name__}; expected a JSON object "
            "({class: [descriptions]} or the full form with 'classes')"
        )
    if "classes" in data and not isinstance(data["classes"], Mapping):
        raise ValueError(
            f"{source}: 'classes' is a {type(data['classes']).__name__}; the full form maps each class to its "
            "descriptions ({\"classes\": {\"cat\": [\"...\"]}}) and a class may not be named 'classes'"
        )
    if "classes" in data:
        body: Mapping[str, Any] = data["classes"]
        questions = _check_questions(source, data["questions"]) if "questions" in data else None
        meta = {k: v for k, v in data.items() if k not in ("classes", "questions", "dataset", "generator")}
        dataset, generator = data.get("dataset"), data.get("generator")
    else:
        body, questions, meta, dataset, generator = data, None, {}, None, None
    if not body and not partial:
        raise ValueError(f"{source}: no classes; expected at least one class with descriptions")
    classes: dict[str, list[str]] = {}
    for name, answers in body.items():
        classes[name] = _check_answers(source, name, answers)
        if questions is None:
            continue
        n, q = len(classes[name]), len(questions)
        if n > q or (n < q and not partial):
            raise ValueError(
                f"{source}: class {name!r} has {n} answers but the file records {q} questions; "
                "expected one answer per question, in question order"
            )
    return DescriptionSet(classes, questions, dataset, generator, meta)


def read(name_or_path: PathLike, partial: bool = False) -> DescriptionSet:
    """Read and validate a shipped set (by name or alias) or a JSON file, keeping its metadata."""
    path = _resolve(name_or_path)
    try:
        data = parse_json(path.read_text(encoding="utf-8"), str(path), "a JSON description file",
                          object_pairs_hook=_reject_duplicates)
    except ValueError as error:  # duplicate keys (parse_json's own errors already name the file)
        if str(error).startswith(str(path)):
            raise
        raise ValueError(f"{path}: {error}") from None
    return parse(data, str(path), partial=partial)


def load(name_or_path: PathLike, classes: Optional[Sequence[str]] = None) -> dict[str, list[str]]:
    """``{class: [description, ...]}`` from a shipped set name or a JSON file, validated.

    ``classes`` (the data set's class list) makes the file cover exactly those classes; the
    result is then in that order, which is the order of the classifier's outputs.
    """
    result = read(name_or_path)
    desc = result.classes
    if classes is None:
        return desc
    classes = list(classes)
    missing = [c for c in classes if c not in desc]
    extra = [c for c in desc if c not in set(classes)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing classes: {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"classes not in the data set: {', '.join(map(repr, extra))}")
        raise ValueError(
            f"{_resolve(name_or_path)}: {'; '.join(parts)}; expected exactly the data set's "
            f"{len(classes)} classes"
        )
    return {c: desc[c] for c in classes}


def shipped_classes(name: str) -> list[str]:
    """The class list of a shipped set, in the data set's order (torchvision's)."""
    canonical = canonical_name(name)
    if canonical is None or canonical not in list_shipped():
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(list_shipped())}")
    return list(load(canonical))


def save(
    desc: Mapping[str, Iterable[str]],
    path: PathLike,
    questions: Optional[Sequence[str]] = None,
    dataset: Optional[str] = None,
    generator: Optional[str] = None,
    partial: bool = False,
) -> Path:
    """Write a description file in the full form, atomically (a reader never sees half a file).

    The content is validated first, so a file written here always loads again.
    """
    data: dict[str, Any] = {}
    if dataset is not None:
        data["dataset"] = dataset
    if questions is not None:
        data["questions"] = list(questions)
    if generator is not None:
        data["generator"] = generator
    data["classes"] = {name: list(answers) for name, answers in desc.items()}
    target = Path(path)
    parse(data, str(target), partial=partial)
    write_json_atomic(data, target)
    return target


def write_json_atomic(data: Any, path: Path) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_list(path: PathLike, what: str = "entries") -> list[str]:
    """Strings from a JSON list or a text file with one per line (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file; expected a JSON list or a text file of {what}, one per line")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        items = parse_json(text, str(p), f"a JSON list of {what}")
        if isinstance(items, Mapping):  # a description file: take its class names
            items = list(parse(items, str(p), partial=True).classes)
        if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items):
            raise ValueError(f"{p}: expected a JSON list of non-empty strings ({what})")
        out = [s.strip() for s in items]
    else:
        out = [line.strip() for line in text.splitlines() if line.strip()]
    if not out:
        raise ValueError(f"{p}: no {what} found; expected at least one")
    duplicates = sorted({s for s in out if out.count(s) > 1})
    if duplicates:
        raise ValueError(f"{p}: {what} listed more than once: {', '.join(map(repr, duplicates))}")
    return out


def class_list(spec: PathLike) -> list[str]:
    """Classes named by a shipped data set name, a JSON list/description file or a text file."""
    text = os.fspath(spec)
    if canonical_name(text) in list_shipped():
        return shipped_classes(text)
    if not Path(text).expanduser().is_file():
        raise ValueError(
            f"unknown classes {text!r}: neither a data set name nor a file; expected one of "
            f"{', '.join(list_shipped())}, a JSON list or a text file with one class per line"
        )
    return read_list(Path(text).expanduser(), "classes")


def question_list(path: PathLike) -> list[str]:
    """Question templates from a file; each must contain ``{class}``."""
    questions = read_list(path, "questions")
    bad = [q for q in questions if CLASS_PLACEHOLDER not in q]
    if bad:
        raise ValueError(
            f"{path}: questions without the {CLASS_PLACEHOLDER} placeholder: "
            f"{', '.join(map(repr, bad))}; each question must name the class as {CLASS_PLACEHOLDER}"
        )
    return questions

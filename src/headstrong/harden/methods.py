"""Hardening methods by name, and their combinations ("range+duplicate"), for the CLI, the
study's ``hardening`` axis and the benchmark: one place that turns a name into transforms.

A combination runs in one fixed order whatever order it is written in: fault-aware
fine-tuning first (it changes weights), then range restriction or clipping (bounds profiled on
the final weights), then duplication (its copies see the final model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from torch import nn

__all__ = ["METHODS", "HardenOptions", "parse_methods", "apply_methods", "NONE"]

NONE = "none"
METHODS = ("fault-aware", "range", "clip", "duplicate")  # also the order a combination runs in


@dataclass(frozen=True)
class HardenOptions:
    """Settings of every method (each method reads its own)."""

    # range / clip
    bounds: str = "max"
    where: str = "activations"
    per_channel: bool = False
    # duplicate
    layers: Optional[tuple[str, ...]] = None  # default: the classification layer
    redundancy: str = "dmr"
    top: Optional[int] = None  # with a ranking: the top-k layers
    separate_weights: bool = False
    # fault-aware
    fmt: str = "fp32"
    kind: str = "neuron"
    rate: Optional[float] = None
    flips: Optional[int] = 64
    epochs: int = 1
    lr: float = 0.01
    limit_train: Optional[int] = None
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every setting now, before any training or profiling runs."""
        from headstrong import formats
        from headstrong.harden.duplicate import MODES as REDUNDANCY
        from headstrong.harden.finetune import KINDS
        from headstrong.harden.range import _check_options, _parse_bounds

        _parse_bounds(self.bounds)
        _check_options("clamp", self.where)
        if self.redundancy not in REDUNDANCY:
            raise ValueError(f"unknown redundancy {self.redundancy!r}; expected one of {', '.join(REDUNDANCY)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        formats.get(self.fmt)
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))
                                      or not 0.0 <= float(self.rate) <= 1.0):
            raise ValueError(f"rate must be a bit-error rate in [0, 1] (e.g. 1e-6); got {self.rate!r}")
        for name, low in (("flips", 0), ("epochs", 1), ("batch_size", 1), ("top", 1), ("limit_train", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number; got {self.lr!r}")


def parse_methods(text: str) -> tuple[str, ...]:
    """``"range+duplicate"`` -> ("range", "duplicate") in the order they run; ``"none"`` -> ()."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a hardening must be {NONE!r}, one of {', '.join(METHODS)} or a '+' combination; got {text!r}")
    if text.strip() == NONE:
        return ()
    parts = [p.strip() for p in text.split("+")]
    bad = [p for p in parts if p not in METHODS]
    if bad:
        raise ValueError(
            f"unknown hardening method(s) {', '.join(map(repr, bad))}; allowed: {NONE}, {', '.join(METHODS)} "
            "or a '+' combination such as range+duplicate"
        )
    if "range" in parts and "clip" in parts:
        raise ValueError("range and clip both restrict activations (clamp vs zero); choose one")
    if len(set(parts)) != len(parts):
        raise ValueError(f"hardening {text!r} names a method twice")
    return tuple(m for m in METHODS if m in parts)


def apply_methods(
    model: nn.Module,
    methods: Sequence[str],
    options: HardenOptions,
    *,
    profile_data: Any = None,
    train_data: Optional[str] = None,
    ranking: Any = None,
    out: Optional[str | Path] = None,
) -> nn.Module:
    """``model`` hardened by ``methods`` (from ``parse_methods``), a new model.

    ``profile_data``: images the bounds are profiled on (range, clip); ``train_data``: the data
    set name fault-aware fine-tuning trains on; ``ranking``: a campaign result whose top
    ``options.top`` layers are duplicated; ``out``: fine-tuning's run folder (resumable).
    """
    from headstrong.harden.duplicate import duplicate
    from headstrong.harden.finetune import fault_aware_finetune
    from headstrong.harden.range import range_restrict

    hardened = model
    for method in methods:
        if method == "fault-aware":
            if train_data is None:
                raise ValueError("fault-aware fine-tuning needs train_data (a data set name)")
            extra = {"limit_train": options.limit_train} if options.limit_train else {}
            hardened = fault_aware_finetune(
                hardened, train_data, fmt=options.fmt, kind=options.kind, rate=options.rate,
                flips=None if options.rate is not None else options.flips, epochs=options.epochs, lr=options.lr,
                out=out, seed=options.seed, batch_size=options.batch_size, **extra,
            )
        elif method in ("range", "clip"):
            hardened = range_restrict(hardened, profile_data, bounds=options.bounds, where=options.where,
                                      per_channel=options.per_channel, mode="clamp" if method == "range" else "zero")
        elif method == "duplicate":
            if options.top is not None:
                if ranking is None:
                    raise ValueError("duplicate with top=k needs a campaign result to rank the layers by")
                hardened = duplicate(hardened, ranking, top=options.top, mode=options.redundancy,
                                     separate_weights=options.separate_weights)
            else:
                layers = options.layers or (getattr(model, "classifier_name", None) or _last_layer(model),)
                hardened = duplicate(hardened, list(layers), mode=options.redundancy,
                                     separate_weights=options.separate_weights)
        else:  # parse_methods admits nothing else
            raise ValueError(f"unknown hardening method {method!r}; allowed: {', '.join(METHODS)}")
    return hardened


def _last_layer(model: nn.Module) -> str:
    from headstrong.engine import injectable_layers

    names = injectable_layers(model)
    if not names:
        raise ValueError("the model has no injectable layer to duplicate")
    return names[-1]

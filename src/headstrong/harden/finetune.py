"""Fault-aware fine-tuning (Zahid et al., ITC 2020): a trained model trains on with random bit
flips in its forward pass, so it learns weights whose outputs survive them.

The flips are drawn in a number format, in the outputs of the injectable layers (``neuron``),
their weights (``weight``) or both, at a bit-error ``rate`` (every bit flips independently) or
as ``flips`` bits per batch (spread uniformly over all targeted elements). Gradients pass
straight through a flip (the flipped value minus the clean one is a constant of the step). A
flip that yields Inf or NaN trains as 0 (the value a range restriction would give NaN), so one
exponent flip cannot turn the loss into NaN and end the run, and a finite flipped value is held
to the tensor's own max |x| in that batch (what GoldenEye's range detector reports), so a 1e38
activation cannot blow up the weight gradients of the layers after it.

It runs ``headstrong.train.train`` itself (optimiser, schedule, augmentation, atomic
per-epoch checkpoints, resume after a kill): the flips draw from the global generator the
recipe reseeds every epoch, so a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.func import functional_call

from headstrong import formats
from headstrong.engine import injectable_layers
from headstrong.harden import _graph
from headstrong.train import TrainConfig, load_checkpoint, train

__all__ = ["fault_aware_finetune", "FaultInjector", "KINDS"]

KINDS = ("neuron", "weight", "both")
SETTINGS_FILE = "fault_aware.json"


class FaultInjector:
    """``forward(model, x)`` for the recipe: one forward pass with fresh random bit flips."""

    def __init__(self, fmt: str, kind: str, layers: list[str], rate: Optional[float], flips: Optional[int]) -> None:
        self.fmt = formats.get(fmt)
        self.kind = kind
        self.layers = layers
        self.rate = rate
        self.flips = flips

    def _counts(self, sizes: list[int]) -> list[Optional[int]]:
        """Flips per tensor: ``None`` means draw at ``rate``; with ``flips`` k positions spread
        uniformly over all elements."""
        if self.flips is None:
            return [None] * len(sizes)
        total = sum(sizes)
        if total == 0 or self.flips == 0:
            return [0] * len(sizes)
        picks = torch.randint(0, total, (self.flips,))
        edges = torch.tensor([0, *sizes]).cumsum(0)
        which = torch.bucketize(picks, edges[1:], right=True)
        return [int((which == i).sum()) for i in range(len(sizes))]

    def corrupt(self, value: torch.Tensor, count: Optional[int]) -> torch.Tensor:
        """``value`` with bit flips (at the rate, or ``count`` of them); gradients straight through."""
        flat = value.detach().reshape(-1)
        n = flat.numel()
        if count is None:
            index, mask = formats.sample_bit_errors(n, self.fmt.bits, float(self.rate))
        else:
            if count == 0:
                return value
            element = torch.randint(0, n, (count,))
            bit = torch.randint(0, self.fmt.bits, (count,))
            index, inverse = element.unique(return_inverse=True)
            mask = torch.zeros(len(index), dtype=torch.int64)
            mask.scatter_(0, inverse, torch.bitwise_left_shift(torch.ones_like(bit), bit))
        if len(index) == 0:
            return value
        index, mask = index.to(flat.device), mask.to(flat.device)
        fmt = self.fmt.with_scale(self.fmt.scale_for(flat)) if self.fmt.needs_scale else self.fmt
        flipped = fmt.flip_mask(flat[index], mask)
        flipped = torch.where(torch.isfinite(flipped), flipped, torch.zeros_like(flipped))
        bound = float(flat.abs().max())
        flipped = flipped.clamp(-bound, bound)  # as the range detector reports it: trains stably
        delta = torch.zeros_like(flat).index_put_((index,), flipped - flat[index])
        return value + delta.reshape(value.shape)

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        modules = dict(model.named_modules())
        params = None
        if self.kind in ("weight", "both"):
            weights = {f"{n}.weight": modules[n].weight for n in self.layers
                       if isinstance(getattr(modules[n], "weight", None), torch.Tensor)}
            counts = self._counts([w.numel() for w in weights.values()])
            params = {name: self.corrupt(w, c) for (name, w), c in zip(weights.items(), counts)}
        handles = []
        if self.kind in ("neuron", "both"):
            state = {"counts": None}
            sizes = self._sizes(model, modules, x) if self.flips is not None else None

            def make_hook(i: int) -> Any:
                def hook(module: nn.Module, args: Any, out: Any) -> Any:
                    if not isinstance(out, torch.Tensor):
                        return None
                    if state["counts"] is None:
                        state["counts"] = self._counts(sizes) if sizes is not None else [None] * len(self.layers)
                    return self.corrupt(out, state["counts"][i])
                return hook

            handles = [modules[n].register_forward_hook(make_hook(i)) for i, n in enumerate(self.layers)]
        try:
            return model(x) if params is None else functional_call(model, params, (x,))
        finally:
            for handle in handles:
                handle.remove()

    def _sizes(self, model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor) -> list[int]:
        """Output sizes of the targeted layers for this batch (from one shape-only pass, cached)."""
        key = tuple(x.shape)
        cached = getattr(self, "_size_cache", {})
        if key not in cached:
            sizes = {n: 0 for n in self.layers}

            def make_hook(name: str) -> Any:
                def hook(module: nn.Module, args: Any, out: Any) -> None:
                    if isinstance(out, torch.Tensor):
                        sizes[name] = out.numel()
                return hook

            handles = [modules[n].register_forward_hook(make_hook(n)) for n in self.layers]
            training = model.training
            try:
                model.eval()
                with torch.no_grad():
                    model(x)
            finally:
                model.train(training)
                for handle in handles:
                    handle.remove()
            cached[key] = [sizes[n] for n in self.layers]
            self._size_cache = cached
        return cached[key]


def _check(kind: str, fmt: str, rate: Optional[float], flips: Optional[int]) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    formats.get(fmt)  # an unknown name lists the formats
    if (rate is None) == (flips is None):
        raise ValueError("give exactly one of rate (a bit-error rate in [0, 1]) and flips (bits flipped per batch)")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"rate must be a bit-error rate in [0, 1] (e.g. 1e-6); got {rate!r}")
    if flips is not None and (isinstance(flips, bool) or not isinstance(flips, int) or flips < 0):
        raise ValueError(f"flips must be a non-negative integer (bits flipped per batch); got {flips!r}")


def fault_aware_finetune(
    model: nn.Module,
    train_data: str,
    *,
    fmt: str = "fp32",
    kind: str = "neuron",
    rate: Optional[float] = None,
    flips: Optional[int] = None,
    epochs: int = 1,
    lr: float = 0.01,
    layers: Any = "all",
    out: Optional[str | Path] = None,
    seed: int = 0,
    progress: bool = False,
    **train_settings: Any,
) -> nn.Module:
    """A copy of ``model`` fine-tuned with bit flips in its forward pass.

    ``train_data``: the data set name the recipe loads (``fashion-mnist``, ``cifar10``,
    ``imagefolder:PATH``...). ``kind``: ``neuron`` (outputs of the injectable layers),
    ``weight`` or ``both``; ``fmt``: the number format the flips happen in; ``rate`` (bit-error
    rate in [0, 1]) or ``flips`` (bits per batch). ``layers``: ``"all"`` injectable layers or a
    list. ``out``: the run folder (checkpoints every epoch; calling again with it resumes after a
    kill); without it a temporary folder is used. Other recipe settings (``batch_size``,
    ``limit_train``, ``augment``, ``threads``, ...) pass through to ``TrainConfig``.
    """
    _check(kind, fmt, rate, flips)
    if not isinstance(train_data, str):
        raise TypeError(f"train_data must be a data set name the recipe loads (e.g. 'fashion-mnist'); got {type(train_data).__name__}")
    spec = getattr(model, "spec", None)
    if not spec or not spec.get("backbone"):
        raise ValueError("fault_aware_finetune needs a headstrong model built by backbone name (its checkpoints rebuild it)")
    names = injectable_layers(model) if layers == "all" else [str(n) for n in layers]
    valid = injectable_layers(model)
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"unknown layer(s) {', '.join(map(repr, bad))}; injectable layers: {', '.join(valid)}")
    settings = {"method": "fault-aware", "fmt": fmt, "kind": kind, "rate": rate, "flips": flips,
                "layers": names, "dataset": train_data, "epochs": int(epochs), "lr": float(lr), "seed": int(seed)}
    start = _graph.add_record(_graph.fresh_copy(model), settings)
    head = "baseline" if spec.get("kind") == "baseline" else "text"
    config = TrainConfig(dataset=train_data, backbone=spec["backbone"], head=head, epochs=epochs, lr=lr, seed=seed,
                         small_input=bool(spec.get("small_input", False)), **train_settings)
    with tempfile.TemporaryDirectory(prefix="headstrong-fault-aware-") as scratch:
        folder = Path(out) if out is not None else Path(scratch)
        _check_settings(folder, settings)
        result = train(config, folder, progress=progress, model=start,
                       forward=FaultInjector(fmt, kind, names, rate, flips))
        tuned, _ = load_checkpoint(result.checkpoint)
    return tuned


def _check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """One folder, one fine-tuning: a resumed run must inject the same faults."""
    path = folder / SETTINGS_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != json.loads(json.dumps(settings)):
            changed = sorted(k for k in settings if previous.get(k) != json.loads(json.dumps(settings)).get(k))
            raise ValueError(f"{folder} holds another fault-aware fine-tuning (differs in {', '.join(changed)}); use a new out")
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def rebuild(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Fine-tuning changes weights only: replaying it just records it."""
    return _graph.add_record(model, dict(record))


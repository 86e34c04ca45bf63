"""Selective redundancy: the most vulnerable layers run twice (DMR) or three times (TMR).

The original layer keeps its name and runs as usual; a ``Redundant`` module after it recomputes
the layer from the same input with ``layer.forward`` (no hooks) and compares:

* ``dmr``: the copies are compared; where they disagree the layer is recomputed once more and
  the recomputation is used (a transient fault does not strike twice).
* ``tmr``: three copies, each element the majority (the first copy where it agrees with either
  other, else the second).

How injection models it, exactly: a neuron fault (a transient flip of one output) hits one copy,
the one the engine hooks, so it is detected and corrected. A weight fault in **shared** weights
is in every copy: hardware would compute the same wrong value twice, so it is **not** corrected
(``hs.inject`` replaces the weight for the whole forward pass and shows exactly that). With
``separate_weights=True`` each extra copy holds its own weights, so a weight fault in the
original corrupts one copy: TMR outvotes it; DMR detects it but, the fault being permanent, its
recomputation is just as wrong in hardware. The campaign engine's fast weight paths apply a
weight fault as a change of the layer's output, which the copies would take for a transient
fault; so a duplicated layer is marked (``engine.mark_weights_reused``) and campaigns run its
weight faults with the edited weights through the whole model, exactly as ``hs.inject`` does
(slower: one pass per fault over its images).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
import torch.fx as fx
from torch import nn

from headstrong.engine import injectable_layers, mark_weights_reused
from headstrong.harden import _graph

__all__ = ["duplicate", "Redundant", "MODES", "top_layers"]

MODES = ("dmr", "tmr")


class Redundant(nn.Module):
    """Extra copies of one layer and the comparison; holds the layer without registering it
    (the layer keeps its own name; its parameters are not counted twice)."""

    def __init__(self, layer: nn.Module, mode: str, separate_weights: bool) -> None:
        super().__init__()
        self.mode = mode
        self.separate_weights = separate_weights
        object.__setattr__(self, "_layer", layer)  # not a child: no second name for it
        mark_weights_reused(layer)  # weight faults: the whole model with the edited weights
        self.copies = nn.ModuleList()
        if separate_weights:
            for _ in range(MODES.index(mode) + 1):
                holder = nn.Module()
                for name, p in layer.named_parameters(recurse=False):
                    holder.register_buffer(name, p.detach().clone())
                self.copies.append(holder)

    def copy_forward(self, x: torch.Tensor, copy: int) -> torch.Tensor:
        """Copy ``copy`` (1, 2) of the layer; 0 is a clean recomputation of the original."""
        layer = self._layer
        if copy == 0 or not self.separate_weights:
            return layer.forward(x)
        holder = self.copies[copy - 1]
        saved = {name: layer._parameters[name] for name, _ in holder.named_buffers(recurse=False)}
        try:
            for name, value in holder.named_buffers(recurse=False):
                layer._parameters[name] = value  # type: ignore[assignment]
            return layer.forward(x)
        finally:
            for name, value in saved.items():
                layer._parameters[name] = value

    def forward(self, first: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _compare(first, x, self)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, separate_weights={self.separate_weights}"


def _compare(first: torch.Tensor, x: torch.Tensor, redundant: Redundant) -> torch.Tensor:
    """The redundant result (a leaf for torch.fx: its branch depends on the data)."""
    second = redundant.copy_forward(x, 1)
    if redundant.mode == "dmr":
        if torch.equal(first, second):
            return first
        again = redundant.copy_forward(x, 0)
        return torch.where(first == second, first, again)
    third = redundant.copy_forward(x, 2)
    return torch.where((first == second) | (first == third), first, second)


torch.fx.wrap("_compare")


def top_layers(result: Any, top: int) -> list[str]:
    """The ``top`` layers with the highest mean ΔLoss in a campaign result's per-layer table."""
    frame = getattr(result, "per_layer", None)
    if frame is None or "layer" not in frame or "delta_loss_mean" not in frame:
        raise TypeError("layers=result needs a campaign result (with per_layer columns layer and delta_loss_mean)")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer (how many layers to duplicate); got {top!r}")
    ranked = frame.sort_values("delta_loss_mean", ascending=False, na_position="last")
    return [str(n) for n in ranked["layer"].head(top)]


def duplicate(
    model: nn.Module,
    layers: Union[str, Sequence[str], Any],
    *,
    mode: str = "dmr",
    top: Optional[int] = None,
    separate_weights: bool = False,
) -> nn.Module:
    """A copy of ``model`` whose named layers run redundantly (``dmr`` or ``tmr``).

    ``layers``: injectable layer names, or a campaign result with ``top=k`` (its k layers of
    highest mean ΔLoss). See the module docstring for what injection does and does not model:
    neuron faults are corrected; weight faults in shared weights are not.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if top is not None or hasattr(layers, "per_layer"):
        names = top_layers(layers, 1 if top is None else top)
    elif isinstance(layers, str):
        names = [layers]
    else:
        names = [str(n) for n in layers]
    if not names:
        raise ValueError("duplicate needs at least one layer name")
    valid = injectable_layers(model)
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"cannot duplicate {', '.join(map(repr, bad))}: not injectable layers; layers of this model: {', '.join(valid)}")
    done = {n for r in _graph.records(model) if r.get("method") == "duplicate" for n in r["layers"]}
    again = [n for n in names if n in done]
    if again:
        raise ValueError(f"layer(s) {', '.join(map(repr, again))} are already duplicated")
    record = {"method": "duplicate", "layers": list(dict.fromkeys(names)), "mode": mode,
              "separate_weights": bool(separate_weights)}
    return rebuild(_graph.fresh_copy(model), record)


def rebuild(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Insert the redundancy a record describes (used by ``duplicate`` and checkpoint loading)."""
    gm, why = _graph.trace(model)
    if gm is None:
        raise ValueError(f"duplicate needs a model torch.fx can trace: {why}")
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    for name in record["layers"]:
        nodes = calls.get(name, [])
        if len(nodes) != 1 or _graph.site_input(nodes[0]) is None:
            raise ValueError(f"layer {name!r} must be called once, on one input, to be duplicated")
        node = nodes[0]
        redundant = Redundant(gm.get_submodule(name), record["mode"], record["separate_weights"])
        target = _graph.new_slot(gm, "dup", redundant)
        _graph.insert_after(gm, node, target, (_graph.site_input(node),))
    _graph.finish(gm, model)
    return _graph.add_record(gm, dict(record))

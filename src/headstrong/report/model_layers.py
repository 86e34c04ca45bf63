"""The injectable layers of a model, as a PyTorchFI user looks for them first.

One forward pass of one input gives, per layer in forward order: its name (what ``--layers``
takes), its module type, the shape of one sample's output, the number of neurons (elements of that
output: what a neuron fault's index runs over) and of weights (elements of its weight tensor: what
a weight fault's index runs over).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerInfo:
    """One injectable layer: where faults can go and how many sites it has."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    neurons: int
    weights: int


def describe_layers(model: nn.Module, x: torch.Tensor) -> list[LayerInfo]:
    """Every injectable layer of ``model`` in forward order, measured on input ``x`` (a batch of one or more).

    The model is left as it was: hooks are removed and each module's training flag restored.
    """
    from headstrong.engine import eval_mode, injectable_layers

    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a batch of inputs (a tensor with a batch dimension); got {type(x).__name__}")
    names = injectable_layers(model, x)
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def make_hook(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: object, out: object) -> None:
            tensor = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(tensor, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(int(s) for s in tensor.shape[1:])
        return hook

    handles = [modules[name].register_forward_hook(make_hook(name)) for name in names]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name in names:
        shape = shapes.get(name, ())
        weight = getattr(modules[name], "weight", None)
        rows.append(LayerInfo(name, type(modules[name]).__name__, shape,
                              int(torch.Size(shape).numel()) if shape else 0,
                              int(weight.numel()) if isinstance(weight, torch.Tensor) else 0))
    return rows

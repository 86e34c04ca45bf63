"""Fault sites and their probabilities (Thales): p(j) = LP(layer) TP(type) VP(variable) / bits.

Software fault sites are j = (layer, type, element, bit), type one of input activation, weight,
output activation; control faults form one extra site per layer. Layers are the modules that do
multiply-accumulates (Conv1d/2d/3d, Linear); their shapes and MACs are read from one real forward
pass with hooks, so they follow the model and not a guess.

Assumptions, stated once: the bit a fault flips is uniform over the format's bits (1/bits); a
layer's share of time LP is its share of MACs (batch 1); biases are not weight sites (they sit in
the accumulators); utilisation UF is per layer and applies to input, weight and output faults, a
fault in an idle PE being masked (accuracy SA); control faults are not masked by utilisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from headstrong.ra.accelerator import SOFTWARE_TYPES, TYPES, Accelerator

_MAC_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class LayerShape:
    """What a MAC layer looks like for one sample, measured in a forward pass."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    macs: int
    m: int  # output channels / features
    n: int  # output positions per channel
    k: int  # reduction length per output

    @property
    def counts(self) -> dict[str, int]:
        return {
            "input": int(np.prod(self.input_shape)),
            "weight": int(np.prod(self.weight_shape)),
            "output": int(np.prod(self.output_shape)),
        }


def layer_shapes(model: nn.Module, input_shape: Sequence[int]) -> list[LayerShape]:
    """Shapes and MACs of every MAC layer, in forward order, from one forward pass of batch 1.

    ``input_shape`` is one sample's shape, e.g. (1, 28, 28). The model is not modified; its
    training mode is restored and the hooks removed even if the pass fails.
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape {input_shape!r}: give one sample's shape, e.g. (1, 28, 28)")
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, _MAC_MODULES)}
    found: list[LayerShape] = []
    seen: set[str] = set()

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        name = names[id(module)]
        if name in seen:
            raise ValueError(f"layer {name!r} runs twice in one forward pass; shared layers are not supported")
        seen.add(name)
        x, y = args[0], output
        in_shape, out_shape = tuple(x.shape[1:]), tuple(y.shape[1:])
        w_shape = tuple(module.weight.shape)
        if isinstance(module, nn.Linear):
            m, k = module.out_features, module.in_features
            n = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
            kind = "Linear"
        else:
            m = module.out_channels
            k = (module.in_channels // module.groups) * int(np.prod(module.kernel_size))
            n = int(np.prod(out_shape[1:]))
            kind = type(module).__name__
        found.append(LayerShape(name, kind, in_shape, out_shape, w_shape, m * n * k, m, n, k))

    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in names]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not found:
        raise ValueError("the model has no Conv or Linear layer that ran: no fault sites to weigh")
    return found


def site_probabilities(
    model: nn.Module, accelerator: Accelerator, input_shape: Sequence[int], bits: int = 16
) -> pd.DataFrame:
    """One row per (layer, type) with LP, TP, VP, UF and p, the chance a fault hits that group.

    ``p`` sums to 1 over all rows (control included); a single site (element, bit) of a group
    has probability ``p_site = p * VP / bits``, so ``sum(p_site * n_variables * bits) == 1``.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits = {bits!r}: must be an integer >= 1 (the format's width)")
    shapes = layer_shapes(model, input_shape)
    total_macs = sum(s.macs for s in shapes)
    tp = accelerator.type_probabilities()
    rows = []
    for s in shapes:
        lp = s.macs / total_macs
        uf = accelerator.utilisation(s.m, s.n, s.k)
        counts = s.counts
        for t in TYPES:
            n_var = counts.get(t, 1)
            rows.append({
                "layer": s.name, "type": t, "n_variables": n_var, "macs": s.macs,
                "LP": lp, "TP": tp[t], "VP": 1.0 / n_var, "UF": uf if t != "control" else 1.0,
                "p": lp * tp[t], "p_site": lp * tp[t] / n_var / (bits if t != "control" else 1),
            })
    frame = pd.DataFrame(rows)
    frame.attrs["bits"] = bits
    return frame


class SiteSpace:
    """The software fault sites of one model on one accelerator, indexed by one integer each.

    Groups are the (layer, software type) pairs with p > 0; site id = offset[g] + element * bits
    + bit. Nothing per element is materialised, so large models cost nothing here.
    """

    def __init__(self, model: nn.Module, accelerator: Accelerator, input_shape: Sequence[int], bits: int):
        self.accelerator = accelerator
        self.bits = int(bits)
        self.table = site_probabilities(model, accelerator, input_shape, bits)
        self.shapes = {s.name: s for s in layer_shapes(model, input_shape)}
        sw = self.table[self.table["type"].isin(SOFTWARE_TYPES) & (self.table["p"] > 0)]
        self.groups = sw.reset_index(drop=True)
        self.layer = self.groups["layer"].to_numpy()
        self.type = self.groups["type"].to_numpy()
        self.n = self.groups["n_variables"].to_numpy(dtype=np.int64)
        self.p_group = self.groups["p"].to_numpy(dtype=np.float64)  # mass of the group (all bits)
        self.uf = self.groups["UF"].to_numpy(dtype=np.float64)
        self.layer_lp = self.groups["LP"].to_numpy(dtype=np.float64)
        self.offset = np.concatenate([[0], np.cumsum(self.n * self.bits)]).astype(np.int64)
        self.size = int(self.offset[-1])
        control = self.table[self.table["type"] == "control"]
        self.p_control = float(control["p"].sum())
        self.p_software = float(self.p_group.sum())

    def __len__(self) -> int:
        return self.size

    def decode(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Site ids -> (group, element, bit)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"site ids must lie in 0..{self.size - 1}")
        group = np.searchsorted(self.offset, ids, side="right") - 1
        rest = ids - self.offset[group]
        return group, rest // self.bits, rest % self.bits

    def encode(self, group: np.ndarray, element: np.ndarray, bit: np.ndarray) -> np.ndarray:
        return self.offset[np.asarray(group)] + np.asarray(element) * self.bits + np.asarray(bit)

    def p_site(self, group: np.ndarray) -> np.ndarray:
        """p(j) of one site in each given group (element and bit uniform within a group)."""
        return self.p_group[group] / (self.n[group] * self.bits)

    def software_mask(self, group: np.ndarray) -> np.ndarray:
        """True for the sites PyTorchFI-style tools sample: neurons (outputs) and weights."""
        return np.isin(self.type[group], ("output", "weight"))

    @property
    def n_software_sites(self) -> int:
        """Number of output and weight sites: the uniform population of the ``software`` figure."""
        mask = np.isin(self.type, ("output", "weight"))
        return int((self.n[mask] * self.bits).sum())

"""Per-layer helpers: a tensor's format (its scale), and a weight fault's delta on a layer's output.

Both the fx path (on cached golden tensors) and the hook path (inside a forward hook) call
``apply_weight_faults``, so the two paths share one definition of a weight fault.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from headstrong import formats


def layer_format(fmt: Any, max_abs: float) -> Any:
    """The format for one tensor: integer formats get the scale ``max|x| / (2**(bits-1) - 1)``."""
    fmt = formats.get(fmt)
    if getattr(fmt, "needs_scale", False):
        top = 2 ** (fmt.bits - 1) - 1
        scale = max_abs / top if max_abs > 0 and math.isfinite(max_abs) else 1.0
        return fmt.with_scale(scale)
    return fmt


def is_identity_format(fmt: Any) -> bool:
    return getattr(fmt, "name", None) == "fp32"


def supports_delta(module: nn.Module) -> bool:
    """Conv and Linear: a weight fault changes the output by ``Δw × input`` in one channel."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and not isinstance(
        module, nn.modules.conv._ConvTransposeNd
    )


def apply_weight_faults(
    module: nn.Module,
    weight: torch.Tensor,
    inp: torch.Tensor,
    out: torch.Tensor,
    index: torch.Tensor,
    value: torch.Tensor,
    params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Row i of the layer's output as if weight element ``index[i]`` held ``value[i]``.

    Conv and Linear add ``delta × (the matching input patch)`` to one output channel; other
    modules with a weight are run again with the changed weight, one fault at a time.
    """
    n = len(out)
    rows = torch.arange(n, device=out.device)
    if not supports_delta(module):
        return _rerun(module, weight, inp, out, index, value, params or {})
    delta = value - weight.reshape(-1)[index]
    if isinstance(module, nn.Linear):
        fan_in = weight.shape[1]
        o, j = index // fan_in, index % fan_in
        new = out.reshape(n, -1, out.shape[-1]).clone()
        src = inp.reshape(n, -1, inp.shape[-1])
        new[rows, :, o] = new[rows, :, o] + delta[:, None] * src[rows, :, j]
        return new.view(out.shape)
    return _conv_delta(module, weight, inp, out, index, delta)


def _conv_delta(module: Any, weight: torch.Tensor, inp: torch.Tensor, out: torch.Tensor,
                index: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    n = len(out)
    rows = torch.arange(n, device=out.device)
    spatial = weight.dim() - 2
    kernel = weight.shape[2:]
    coords = []
    rest = index
    for size in reversed(kernel):
        coords.append(rest % size)
        rest = rest // size
    coords.reverse()
    ic = rest % weight.shape[1]
    oc = rest // weight.shape[1]
    per_group_out = module.out_channels // module.groups
    channel = (oc // per_group_out) * weight.shape[1] + ic
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    padded = F.pad(inp, module._reversed_padding_repeated_twice, mode=mode)
    out_sizes = out.shape[2:]
    idx: list[torch.Tensor] = [rows.view(-1, *([1] * spatial)), channel.view(-1, *([1] * spatial))]
    for d in range(spatial):
        pos = coords[d][:, None] * module.dilation[d] + module.stride[d] * torch.arange(
            out_sizes[d], device=out.device)[None, :]
        shape = [n] + [1] * spatial
        shape[1 + d] = out_sizes[d]
        idx.append(pos.view(shape))
    patch = padded[tuple(idx)]
    new = out.clone()
    scale = delta.view(-1, *([1] * spatial))
    new[rows, oc] = new[rows, oc] + scale * patch
    return new


def _rerun(module: nn.Module, weight: torch.Tensor, inp: torch.Tensor, out: torch.Tensor,
           index: torch.Tensor, value: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    new = out.clone()
    flat = weight.reshape(-1)
    for i in range(len(out)):
        w = flat.clone()
        w[index[i]] = value[i]
        state = dict(params)
        state["weight"] = w.view(weight.shape)
        new[i] = torch.func.functional_call(module, state, (inp[i : i + 1],))[0]
    return new

"""Element edits on tensors held in a number format: how every fault model changes a value.

``edit_tensor`` applies edits to one tensor held in a format: each element's edits in one pass
of ``fmt.apply_masks`` (XOR, then clear, then set), only the edited elements (with their blocks),
or ``fmt.flip_metadata_at`` for metadata. The exact ``inject`` and the fast ``FaultEvaluator``
both apply faults with these functions, so they share one definition of each fault.

Masked: a (fault, input) pair whose edits changed no bit of any tensor (a stuck bit that held
its value already, a bit-error trial that drew nothing) is reported as masked, and still
evaluated: its outputs equal the golden ones.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from headstrong.faults.faultset import KINDS
from headstrong.faults.models import OPS
from headstrong.faults.value_models import FUNCTION_MASK, mask_values

NEURON, WEIGHT = KINDS.index("neuron"), KINDS.index("weight")
FLIP, SET0, SET1, META, VALUE = (OPS.index(o) for o in ("flip", "set0", "set1", "meta", "value"))
ValueFn = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _or_reduce(keys: torch.Tensor, masks: torch.Tensor, width: int, parity: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct keys and, per key, the XOR (``parity``) or OR of its masks: a loop over the
    format's bits, never over elements (two flips of one bit cancel, as in hardware)."""
    unique, inverse = keys.unique(return_inverse=True)
    if len(unique) == len(keys):
        out = torch.empty_like(masks)
        out[inverse] = masks
        return unique, out
    out = torch.zeros(len(unique), dtype=torch.int64, device=masks.device)
    for b in range(width):
        count = torch.zeros(len(unique), dtype=torch.int64, device=masks.device)
        count.scatter_add_(0, inverse, (masks >> b) & 1)
        hit = (count & 1) if parity else (count > 0).long()
        out |= hit << b
    return unique, out


def edit_tensor(
    x: torch.Tensor, fmt: Any, rows: torch.Tensor, index: torch.Tensor, op: torch.Tensor,
    mask: torch.Tensor, bound: float | None = None, value_fn: ValueFn = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [R, ...], already held in ``fmt``, with the edits applied (a new tensor): edit i
    hits row ``rows[i]``, flat element ``index[i]`` of that row, with ``op[i]`` and ``mask[i]``.

    Element edits touch only their elements (each edited with its whole block for block
    formats, whose exponent it keeps); a metadata edit re-decodes its row. Returns the tensor
    and, per edit, whether it changed anything (an element's pattern; for metadata, any value
    of the row). With ``bound`` (the range detector), changed values that are NaN, infinite or
    beyond ``±bound`` become ``±bound`` (NaN: +bound). ``value_fn``: the edits' function of the
    old value, for ``value`` edits that carry one.
    """
    n, per = len(x), x[0].numel() if len(x) else 0
    device = x.device
    rows, index, op, mask = (t.to(device) for t in (rows, index, op, mask))
    meta = op == META
    flat = x.reshape(-1).clone()
    edit_changed = torch.zeros(len(op), dtype=torch.bool, device=device)
    # the format's values are float32: so is the bound that replaces them
    limit = None if bound is None else torch.tensor(bound, dtype=torch.float32, device=device)

    def detect(values: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        if limit is None:
            return values
        bad = changed & (~torch.isfinite(values) | (values.abs() > limit))
        return torch.where(bad, torch.where(values < 0, -limit, limit), values)

    if bool(meta.any()):
        if bool((mask[meta] & (mask[meta] - 1)).any()):
            raise ValueError("a metadata edit flips one bit: its mask must be a power of two")
        meta_rows = rows[meta]
        if len(meta_rows.unique()) != len(meta_rows) or bool(torch.isin(rows[~meta], meta_rows).any()):
            raise ValueError(
                "a metadata edit must be alone in its tensor (one per fault and input, no element "
                "edits beside it): the values depend on the edited metadata"
            )
        bit = mask[meta].log2().round().long()
        held = x[meta_rows].reshape(len(meta_rows), per).to(torch.float32)
        flipped = fmt.flip_metadata_at(x[meta_rows], index[meta], bit).reshape(len(meta_rows), per)
        differs = (flipped != held) & ~(flipped.isnan() & held.isnan())
        edit_changed[meta] = differs.any(1)
        view = flat.view(n, per)
        view[meta_rows] = detect(flipped, differs).to(flat.dtype)
    element = ~meta
    if bool(element.any()):
        keys, inverse, values, changed = edit_sparse(x, fmt, rows[element] * per + index[element],
                                                     op[element], mask[element], value_fn=value_fn)
        flat[keys] = detect(values, changed).to(flat.dtype)
        edit_changed[element] = changed[inverse]
    return flat.view(x.shape), edit_changed


def edited_elements(weight: torch.Tensor, fmt: Any, index: torch.Tensor, op: torch.Tensor,
                    mask: torch.Tensor, value_fn: ValueFn = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The new value of element ``index[i]`` of ``weight`` (held in ``fmt``) under edit i
    alone (one fault each), and whether it changed: one vectorised gather, one format pass."""
    device = weight.device
    _, _, new, hit = edit_sparse(weight, fmt, index.to(device), op.to(device), mask.to(device), combine=False,
                                 value_fn=value_fn)
    return new.to(weight.dtype), hit


def edit_sparse(x: torch.Tensor, fmt: Any, key: torch.Tensor, op: torch.Tensor, mask: torch.Tensor,
                combine: bool = True, value_fn: ValueFn = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edits of elements of ``x`` (held in ``fmt``) at flat ``key``s, combined per element (XOR
    parity of the flips, then the bits cleared, then those set) and applied to each element
    alone, with its block for block formats: distinct keys, each edit's key position, the new
    values (float32) and whether each element changed. Without ``combine`` every edit is
    applied alone (one row each, keys may repeat)."""
    if combine:
        keys, inverse = key.unique(return_inverse=True)
    else:
        keys, inverse = key, torch.arange(len(key), device=key.device)
    masks = []
    for code, parity in ((FLIP, True), (SET0, False), (SET1, False)):
        sel = op == code
        m = torch.zeros(len(keys), dtype=torch.int64, device=key.device)
        if bool(sel.any()):
            if combine:
                k, v = _or_reduce(inverse[sel], mask[sel], fmt.bits, parity)
            else:
                k, v = inverse[sel], mask[sel]
            m[k] = v
        masks.append(m)
    flat = x.reshape(-1)
    block = getattr(fmt, "block_size", None) or 1
    last = x.shape[-1] if x.dim() else 1
    pos = keys % last
    at = pos % block
    if block == 1:
        values, windows = flat[keys][:, None], None
    else:
        offsets = torch.arange(block, device=flat.device)
        window = (keys - at)[:, None] + offsets[None, :]
        valid = (pos - at)[:, None] + offsets[None, :] < last
        zero = torch.zeros((), dtype=flat.dtype, device=flat.device)
        values = torch.where(valid, flat[window.clamp(max=len(flat) - 1)], zero)
        windows = at
    if windows is None:
        dense = [m[:, None] for m in masks]
        new, unchanged = fmt.apply_masks(values, *dense)
        new, changed = new[:, 0], ~unchanged[:, 0]
        if bool((op == VALUE).any()):
            new, changed = _write_values(fmt, values[:, 0], new, changed, inverse[op == VALUE], mask[op == VALUE],
                                         value_fn)
        return keys, inverse, new, changed
    if bool((op == VALUE).any()):
        raise ValueError(f"value edits write a whole element; {fmt.name}'s elements share block exponents")
    hit = torch.arange(block, device=flat.device)[None, :] == at[:, None]
    dense = [torch.where(hit, m[:, None], torch.zeros_like(m[:, None])) for m in masks]
    new, unchanged = fmt.apply_masks(values, *dense)
    rows = torch.arange(len(keys), device=flat.device)
    return keys, inverse, new[rows, at], ~unchanged[rows, at]


def _write_values(fmt: Any, held: torch.Tensor, new: torch.Tensor, changed: torch.Tensor, at: torch.Tensor,
                  mask: torch.Tensor, value_fn: ValueFn) -> tuple[torch.Tensor, torch.Tensor]:
    """``new`` with the elements at positions ``at`` set by value edits (the float32 in ``mask``, or
    ``value_fn`` of their value so far), held in ``fmt``; ``changed`` against ``held``, the value
    the element had before any edit."""
    old = new[at]
    if value_fn is None:
        if bool((mask == FUNCTION_MASK).any()):
            raise ValueError("value edits of a fault model that computes values from the old ones reached "
                             "the engine without its function: pass the edits' value_fn")
        written = mask_values(mask).to(old.device)
    else:
        written = value_fn(old.clone())
        if not isinstance(written, torch.Tensor) or written.shape != old.shape:
            got = tuple(written.shape) if isinstance(written, torch.Tensor) else type(written).__name__
            raise ValueError(f"a value fault's function must return a tensor shaped like its input "
                             f"{tuple(old.shape)}; got {got}")
    written = fmt.quantize(written.to(device=old.device, dtype=torch.float32))
    new, changed = new.clone(), changed.clone()
    new[at] = written
    before = held[at]
    changed[at] = (written != before) & ~(written.isnan() & before.isnan())
    return new, changed

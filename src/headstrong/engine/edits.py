"""Applying fault models: ``FaultEdits`` (from ``headstrong.faults.models``) on a network.

``edit_tensor`` applies edits to one tensor held in a format: each element's edits in one pass
of ``fmt.apply_masks`` (XOR, then clear, then set), only the edited elements (with their blocks),
or ``fmt.flip_metadata_at`` for metadata. ``inject_edits`` is the exact path built on it (every
fault alone, on every input, one forward pass per fault, hooks for activations and a functional
call for weights); ``headstrong.engine.edit_evaluator`` is the batched one, sharing this
definition of each fault.

Masked: a (fault, input) pair whose edits changed no bit of any tensor (a stuck bit that held
its value already, a bit-error trial that drew nothing) is reported as masked, and still
evaluated: its outputs equal the golden ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from headstrong import formats
from headstrong.engine.inject import check_profiled, hold_hooks
from headstrong.engine.layers import (
    LayerStats,
    check_input,
    check_model,
    eval_mode,
    injectable_layers,
    profile_layers,
    run_model,
)
from headstrong.engine.sites import is_identity_format, layer_format
from headstrong.faults.faultset import KINDS, FaultSet
from headstrong.faults.models import OPS, FaultEdits, get_fault_model

NEURON, WEIGHT = KINDS.index("neuron"), KINDS.index("weight")
FLIP, SET0, SET1, META = (OPS.index(o) for o in ("flip", "set0", "set1", "meta"))


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
    mask: torch.Tensor, bound: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [R, ...], already held in ``fmt``, with the edits applied (a new tensor): edit i
    hits row ``rows[i]``, flat element ``index[i]`` of that row, with ``op[i]`` and ``mask[i]``.

    Element edits touch only their elements (each edited with its whole block for block
    formats, whose exponent it keeps); a metadata edit re-decodes its row. Returns the tensor
    and, per edit, whether it changed anything (an element's pattern; for metadata, any value
    of the row). With ``bound`` (the range detector), changed values that are NaN, infinite or
    beyond ``±bound`` become ``±bound`` (NaN: +bound).
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
        keys, inverse, values, changed = _edit_sparse(x, fmt, rows[element] * per + index[element],
                                                      op[element], mask[element])
        flat[keys] = detect(values, changed).to(flat.dtype)
        edit_changed[element] = changed[inverse]
    return flat.view(x.shape), edit_changed


def as_edits(faults: Any, fmt: Any, fault_model: Any) -> FaultEdits:
    """``FaultEdits`` as given, or single-site faults (a FaultSet or records) under a model."""
    if isinstance(faults, FaultEdits):
        if fault_model is not None and get_fault_model(fault_model).name != faults.model:
            raise ValueError(
                f"the edits were sampled with fault model {faults.model!r}, not {get_fault_model(fault_model).name!r}"
            )
        return faults
    from headstrong.engine.inject import as_faultset

    model = get_fault_model(fault_model if fault_model is not None else "flip")
    return model.from_sites(as_faultset(faults), fmt)


def _pair_edits(edits: FaultEdits, n_x: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (edit, input row) the edits apply to: edits with sample -1 meet each of ``n_x``
    inputs, the others their one input. Returns edit rows and input rows."""
    every = edits.sample < 0
    if bool((edits.sample >= n_x).any()):
        raise ValueError(f"edit sample {int(edits.sample.max())} out of range for {n_x} inputs")
    ids = torch.arange(edits.n_edits)
    e_all = ids[every].repeat_interleave(n_x)
    r_all = torch.arange(n_x).repeat(int(every.sum()))
    return torch.cat([e_all, ids[~every]]), torch.cat([r_all, edits.sample[~every]])


def _layer_formats(fmt: Any, stats: Mapping[str, LayerStats]) -> tuple[dict[str, Any], dict[str, Any]]:
    out = {n: layer_format(fmt, s.out_max_abs) for n, s in stats.items() if s.calls > 0}
    weight = {n: layer_format(fmt, s.weight_max_abs) for n, s in stats.items() if s.weight_shape is not None}
    return out, weight


def inject_edits(
    model: nn.Module, x: torch.Tensor, faults: Any, fmt: Any = "fp32", range_detector: bool = True,
    fault_model: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[len(faults), len(x), C]`` and masked ``[len(faults), len(x)]``: each fault
    (all its edits together) applied alone to the inputs its edits name (every input for edits
    with no sample). Conventions as ``headstrong.inject``: the targeted tensors are held in
    ``fmt`` (outputs for neuron faults, weights for weight faults), int scales and the range
    detector's bound from max |x| over this ``x``."""
    check_model(model)
    x = check_input(x)
    fmt = formats.get(fmt)
    edits = as_edits(faults, fmt, fault_model)
    modules = dict(model.named_modules())
    held = injectable_layers(model)
    names = list(dict.fromkeys([*held, *edits.layer_names]))
    sites = FaultSet(edits.kind, edits.layer, edits.index, 0)
    sites.validate(model)
    with torch.no_grad():
        stats = profile_layers(model, [x], names)
    check_profiled(sites, model, stats, fmt.bits)
    edits.validate(model, fmt)
    out_fmts, w_fmts = _layer_formats(fmt, stats)
    ran = [n for n in held if stats[n].calls > 0]
    identity = is_identity_format(fmt)
    n_x = len(x)
    base: dict[str, torch.Tensor] = {}
    if not identity:
        for n in ran:
            if stats[n].weight_shape is not None:
                w = modules[n].weight
                base[f"{n}.weight"] = w_fmts[n].quantize(w).to(w.dtype)
    logits, masked = [], []
    edit_rows, input_rows = _pair_edits(edits, n_x)
    with eval_mode(model), torch.no_grad():
        for f in range(len(edits)):
            mine = (edits.fault[edit_rows] == f).nonzero().flatten()
            e, r = edit_rows[mine], input_rows[mine]
            neuron = edits.kind_codes[e] == NEURON
            has_weight = bool((~neuron).any())
            empty = len(e) == 0
            hold_out = not identity and (bool(neuron.any()) or (empty and edits.base_kind == "neuron"))
            hold_w = has_weight or (empty and edits.base_kind == "weight")
            changed_rows = torch.zeros(n_x, dtype=torch.bool)
            state = dict(base) if hold_w else {}
            for lid in edits.layer_ids[e[~neuron]].unique().tolist():
                name = edits.layer_names[lid]
                sel = e[~neuron][edits.layer_ids[e[~neuron]] == lid].unique()
                w = base.get(f"{name}.weight", modules[name].weight.detach())
                new, changed = edit_tensor(w.unsqueeze(0), w_fmts[name], torch.zeros_like(sel),
                                           edits.index[sel], edits.op_codes[sel], edits.mask[sel])
                state[f"{name}.weight"] = new[0]
                if bool(changed.any()):
                    changed_rows[:] = True
            hooks = hold_hooks(modules, {n: out_fmts[n] for n in ran}) if hold_out else []
            try:
                for lid in edits.layer_ids[e[neuron]].unique().tolist():
                    name = edits.layer_names[lid]
                    pick = neuron & (edits.layer_ids[e] == lid)
                    pe, pr = e[pick], r[pick]
                    bound = stats[name].out_max_abs if range_detector else None

                    def hook(mod: nn.Module, args: Any, out: torch.Tensor, pe=pe, pr=pr, name=name, bound=bound) -> torch.Tensor:
                        new, changed = edit_tensor(out, out_fmts[name], pr, edits.index[pe], edits.op_codes[pe],
                                                   edits.mask[pe], bound)
                        changed_rows[pr[changed.cpu()]] = True
                        return new

                    hooks.append(modules[name].register_forward_hook(hook))
                out = functional_call(model, state, (x,)) if state else run_model(model, x)
            finally:
                for handle in hooks:
                    handle.remove()
            logits.append(out)
            masked.append(~changed_rows)
    if not logits:
        return torch.zeros(0, n_x, 0, device=x.device), torch.zeros(0, n_x, dtype=torch.bool)
    return torch.stack(logits), torch.stack(masked)


def edited_elements(weight: torch.Tensor, fmt: Any, index: torch.Tensor, op: torch.Tensor,
                    mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The new value of element ``index[i]`` of ``weight`` (held in ``fmt``) under edit i
    alone (one fault each), and whether it changed: one vectorised gather, one format pass."""
    device = weight.device
    _, _, new, hit = _edit_sparse(weight, fmt, index.to(device), op.to(device), mask.to(device), combine=False)
    return new.to(weight.dtype), hit


def _edit_sparse(x: torch.Tensor, fmt: Any, key: torch.Tensor, op: torch.Tensor, mask: torch.Tensor,
                 combine: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
        return keys, inverse, new[:, 0], ~unchanged[:, 0]
    hit = torch.arange(block, device=flat.device)[None, :] == at[:, None]
    dense = [torch.where(hit, m[:, None], torch.zeros_like(m[:, None])) for m in masks]
    new, unchanged = fmt.apply_masks(values, *dense)
    rows = torch.arange(len(keys), device=flat.device)
    return keys, inverse, new[rows, at], ~unchanged[rows, at]

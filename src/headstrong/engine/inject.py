"""``inject``: every fault applied alone to every input, by the plainest correct means.

A fault (a single flip, or any fault model's set of element edits) is applied whole, one forward
pass per fault: neuron edits with forward hooks, weight edits with a functional call on edited
weights. The caller's model is never modified or copied. This is the yardstick the fast paths of
``FaultEvaluator`` are tested against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from headstrong import formats
from headstrong.engine.layers import (
    LayerStats,
    check_input,
    check_model,
    eval_mode,
    injectable_layers,
    profile_layers,
    run_model,
)
from headstrong.engine.edits import NEURON, edit_tensor
from headstrong.engine.sites import is_identity_format, layer_format
from headstrong.faults import FaultSet
from headstrong.faults.models import FaultEdits, FaultModel, get_fault_model


def as_faultset(faults: FaultSet | Iterable[Mapping[str, Any]]) -> FaultSet:
    if isinstance(faults, FaultSet):
        return faults
    if isinstance(faults, (str, bytes)) or not isinstance(faults, Iterable):
        raise TypeError(f"faults must be a FaultSet or a list of fault records, got {type(faults).__name__}")
    return FaultSet.from_records(faults)


def check_profiled(faults: FaultSet, model: nn.Module, stats: Mapping[str, LayerStats], bits: int) -> None:
    """Validate faults against the model and what profiling saw (layers that never ran, ranges)."""
    faults.validate(model)  # names and weight indices first: clearer messages
    for name in faults.layer_names:
        st = stats.get(name)
        if st is not None and st.calls == 0:
            raise ValueError(
                f"layer {name!r} never runs in the model's forward pass, so faults there have no effect; "
                "choose a layer from injectable_layers(model, x)"
            )
    shapes = {n: s.output_shape for n, s in stats.items() if s.calls > 0}
    faults.validate(model, output_shapes=shapes, bits=bits)


def hold_hooks(modules: Mapping[str, nn.Module], fmts: Mapping[str, Any]) -> list[Any]:
    """Forward hooks that hold each named layer's output in its format."""

    def make(fmt: Any) -> Any:
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            return fmt.quantize(out).to(out.dtype)
        return hook

    return [modules[name].register_forward_hook(make(fmt)) for name, fmt in fmts.items()]


def as_edits(faults: Any, fmt: Any, fault_model: str | FaultModel | None) -> FaultEdits:
    """``FaultEdits`` as given, or sites (a FaultSet or records) made into ``fault_model``'s
    faults (default: single flips)."""
    if isinstance(faults, FaultEdits):
        if fault_model is not None and get_fault_model(fault_model).name != faults.model:
            raise ValueError(
                f"the edits were sampled with fault model {faults.model!r}, not {get_fault_model(fault_model).name!r}"
            )
        return faults
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


def inject(
    model: nn.Module,
    x: torch.Tensor,
    faults: FaultSet | Iterable[Mapping[str, Any]] | FaultEdits,
    fmt: Any = "fp32",
    range_detector: bool = True,
    fault_model: Any = None,
) -> torch.Tensor:
    """Logits ``[len(faults), len(x), num_classes]``: each fault applied alone to every input.

    ``fault_model`` (a name from ``headstrong.faults.list_fault_models()`` or a model object)
    turns single-site faults into that model's (``"stuck-at-1"``: the bit forced to 1; default:
    a flip); faults sampled by a model (``FaultEdits``) carry their model and are applied whole,
    several edits at once (``inject_edits`` also returns which pairs were masked).

    With format ``fmt``, every injectable layer's output (neuron faults) or weight (weight
    faults) is held in the format in the golden and the faulty run alike; integer formats take
    each layer's scale from max |x| over this ``x``, which also bounds the range detector.
    A site's ``sample`` column is ignored here: every fault meets every input.
    """
    if not isinstance(faults, FaultEdits):
        faults = as_faultset(faults)
        if fault_model is None:  # single flips: their bits are the format's
            faults.validate(model, bits=formats.get(fmt).bits)
        faults = faults.with_sample(torch.full((len(faults),), -1, dtype=torch.int64))
    return inject_edits(model, x, faults, fmt, range_detector, fault_model)[0]


def inject_edits(
    model: nn.Module, x: torch.Tensor, faults: Any, fmt: Any = "fp32", range_detector: bool = True,
    fault_model: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[len(faults), len(x), C]`` and masked ``[len(faults), len(x)]``: each fault
    (all its edits together) applied alone to the inputs its edits name (every input for edits
    with no sample). Conventions as ``inject``."""
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
    out_fmts = {n: layer_format(fmt, s.out_max_abs) for n, s in stats.items() if s.calls > 0}
    w_fmts = {n: layer_format(fmt, s.weight_max_abs) for n, s in stats.items() if s.weight_shape is not None}
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
            empty = len(e) == 0
            hold_out = not identity and (bool(neuron.any()) or (empty and edits.base_kind == "neuron"))
            hold_w = bool((~neuron).any()) or (empty and edits.base_kind == "weight")
            changed_rows = torch.zeros(n_x, dtype=torch.bool)
            state = dict(base) if hold_w else {}
            for lid in edits.layer_ids[e[~neuron]].unique().tolist():
                name = edits.layer_names[lid]
                sel = e[~neuron][edits.layer_ids[e[~neuron]] == lid].unique()
                w = base.get(f"{name}.weight", modules[name].weight.detach())
                new, changed = edit_tensor(w.unsqueeze(0), w_fmts[name], torch.zeros_like(sel),
                                           edits.index[sel], edits.op_codes[sel], edits.mask[sel],
                                           value_fn=edits.value_fn)
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
                                                   edits.mask[pe], bound, edits.value_fn)
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
            classes = run_model(model, x).shape[1]
            return torch.zeros(0, n_x, classes, device=x.device), torch.zeros(0, n_x, dtype=torch.bool)
    return torch.stack(logits), torch.stack(masked)

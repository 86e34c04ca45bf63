"""``inject``: every fault applied alone to every input, by the plainest correct means.

Neuron faults use forward hooks; weight faults a functional call with the one weight replaced.
The caller's model is never modified or copied. This is the yardstick the fast paths of
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
from headstrong.engine.sites import flip_neurons, flipped_weights, is_identity_format, layer_format
from headstrong.faults import FaultSet


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


def inject(
    model: nn.Module,
    x: torch.Tensor,
    faults: FaultSet | Iterable[Mapping[str, Any]],
    fmt: Any = "fp32",
    range_detector: bool = True,
    fault_model: Any = None,
) -> torch.Tensor:
    """Logits ``[len(faults), len(x), num_classes]``: each fault applied alone to every input.

    ``fault_model`` (a name from ``headstrong.faults.list_fault_models()`` or a model object)
    turns single-site faults into that model's (``"stuck-at-1"``: the bit forced to 1); faults
    sampled by a model (``FaultEdits``) carry their model and are applied whole, several edits
    at once (``headstrong.engine.inject_edits`` also returns which pairs were masked).

    With format ``fmt``, every injectable layer's output (neuron faults) or weight (weight
    faults) is held in the format in the golden and the faulty run alike; integer formats take
    each layer's scale from max |x| over this ``x``, which also bounds the range detector.
    A fault's ``sample`` column is ignored here: every fault meets every input.
    """
    from headstrong.faults.models import FaultEdits

    if fault_model is not None or isinstance(faults, FaultEdits):
        from headstrong.engine.edits import inject_edits

        return inject_edits(model, x, faults, fmt, range_detector, fault_model)[0]
    check_model(model)
    x = check_input(x)
    faults = as_faultset(faults)
    fmt = formats.get(fmt)
    modules = dict(model.named_modules())
    held = injectable_layers(model)
    faults.validate(model)
    names = list(dict.fromkeys([*held, *faults.layer_names]))
    with torch.no_grad():
        stats = profile_layers(model, [x], names)
    check_profiled(faults, model, stats, fmt.bits)
    ran = [n for n in held if stats[n].calls > 0]
    out_fmts = {n: layer_format(fmt, stats[n].out_max_abs) for n in names}
    w_fmts = {n: layer_format(fmt, stats[n].weight_max_abs) for n in names if stats[n].weight_shape is not None}
    identity = is_identity_format(fmt)
    n_x = len(x)
    results: list[torch.Tensor | None] = [None] * len(faults)
    kinds = faults.kind
    layers = faults.layer
    with eval_mode(model), torch.no_grad():
        neuron = [i for i, k in enumerate(kinds) if k == "neuron"]
        if neuron:
            holds = [] if identity else hold_hooks(modules, {n: out_fmts[n] for n in ran})
            try:
                for i in neuron:
                    name = layers[i]
                    index = faults.index[i].repeat(n_x).to(x.device)
                    bit = faults.bit[i].repeat(n_x).to(x.device)
                    bound = stats[name].out_max_abs if range_detector else None
                    layer_fmt = out_fmts[name]

                    def flip(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
                        return flip_neurons(out, index, bit, layer_fmt, bound)

                    handle = modules[name].register_forward_hook(flip)
                    try:
                        results[i] = run_model(model, x)
                    finally:
                        handle.remove()
            finally:
                for handle in holds:
                    handle.remove()
        weight = [i for i, k in enumerate(kinds) if k == "weight"]
        if weight:
            base = {}
            if not identity:
                for n in ran:
                    if stats[n].weight_shape is not None:
                        base[f"{n}.weight"] = w_fmts[n].quantize(modules[n].weight).to(modules[n].weight.dtype)
            for i in weight:
                name = layers[i]
                w = base.get(f"{name}.weight", modules[name].weight.detach())
                k = faults.index[i : i + 1].to(w.device)
                value = flipped_weights(w, k, faults.bit[i : i + 1].to(w.device), w_fmts[name])
                w = w.clone()
                w.view(-1)[k] = value
                state = dict(base)
                state[f"{name}.weight"] = w
                out = functional_call(model, state, (x,))
                results[i] = out
    if not results:
        with eval_mode(model), torch.no_grad():
            classes = run_model(model, x).shape[1]
        return torch.zeros(0, n_x, classes, device=x.device)
    return torch.stack([r for r in results if r is not None])

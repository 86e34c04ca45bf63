"""A slow, literal fault injector: the yardstick for ``hs.inject``.

For every fault and every image: deep-copy the model, hold the targeted tensors in the format,
change the one element, run the whole network on the one image. Nothing is batched or cached.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from headstrong import formats

TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm,
         nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def _targets(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and isinstance(m, TYPES)]


def _fmt_for(name: str, max_abs: float):
    fmt = formats.get(name)
    if fmt.needs_scale:
        return fmt.with_scale(max_abs / (2 ** (fmt.bits - 1) - 1) if max_abs > 0 else 1.0)
    return fmt


def _profile(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, float]:
    """max |output| of each named module over x, in the plain fp32 model."""
    peak = {n: 0.0 for n in names}
    hooks = []
    for name, module in model.named_modules():
        if name in peak:
            def hook(mod, args, out, name=name):
                peak[name] = max(peak[name], float(out.abs().max()))
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return peak


def _hold_weights(modules: dict[str, nn.Module], targets: list[str], fmt: str) -> None:
    """Every targeted weight held in ``fmt`` (each with its own max |w| as scale), in place."""
    if fmt == "fp32":
        return
    for name in targets:
        w = getattr(modules[name], "weight", None)
        if isinstance(w, torch.Tensor):
            w.copy_(_fmt_for(fmt, float(w.abs().max())).quantize(w))


def _hold_outputs(modules: dict[str, nn.Module], targets: list[str], fmt: str, peak: dict[str, float]) -> None:
    """Every targeted output held in ``fmt`` (scale from its profiled max |x|), by hooks."""
    if fmt == "fp32":
        return
    for name in targets:
        g = _fmt_for(fmt, peak[name])
        modules[name].register_forward_hook(lambda mod, args, out, g=g: g.quantize(out).to(out.dtype))


def _detected(value: torch.Tensor, bound: float) -> torch.Tensor:
    """GoldenEye's range detector on one faulty value: NaN, infinite or beyond ±bound -> ±bound."""
    if not torch.isfinite(value) or abs(float(value)) > bound:
        return torch.tensor(-bound if float(value) < 0 else bound)
    return value


def reference_inject(model: nn.Module, x: torch.Tensor, records: list[dict], fmt: str = "fp32",
                     range_detector: bool = True) -> torch.Tensor:
    """Logits [len(records), len(x), C]: a deep copy per fault, a forward pass per image."""
    model = copy.deepcopy(model).eval()
    targets = _targets(model)
    names = list(dict.fromkeys(targets + [r["layer"] for r in records]))
    peak = _profile(model, x, names)
    results = []
    for rec in records:
        row = []
        net = copy.deepcopy(model)
        modules = dict(net.named_modules())
        if rec["kind"] == "neuron":
            _hold_outputs(modules, targets, fmt, peak)
            layer_fmt = _fmt_for(fmt, peak[rec["layer"]])

            def flip(mod, args, out, rec=rec, f=layer_fmt):
                out = out.clone(memory_format=torch.contiguous_format)
                flipped_all = f.flip(out[0], rec["bit"])  # every element flipped, in its block
                flat = out[0].reshape(-1)
                value = flipped_all.reshape(-1)[rec["index"]]
                if range_detector:
                    value = _detected(value, peak[rec["layer"]])
                flat[rec["index"]] = value
                return out

            modules[rec["layer"]].register_forward_hook(flip)
        else:
            with torch.no_grad():
                _hold_weights(modules, targets, fmt)
                w = modules[rec["layer"]].weight
                layer_fmt = _fmt_for(fmt, float(model.get_submodule(rec["layer"]).weight.abs().max()))
                flipped_all = layer_fmt.flip(w, rec["bit"])
                w.view(-1)[rec["index"]] = flipped_all.reshape(-1)[rec["index"]]
        with torch.no_grad():
            for i in range(len(x)):
                row.append(net(x[i : i + 1])[0])
        results.append(torch.stack(row))
    return torch.stack(results)


def reference_golden(model: nn.Module, x: torch.Tensor, fmt: str = "fp32", kind: str = "neuron") -> torch.Tensor:
    """Golden logits with the targeted tensors held in ``fmt``: outputs (neuron) or weights (weight)."""
    net = copy.deepcopy(model).eval()
    targets = _targets(net)
    modules = dict(net.named_modules())
    peak = _profile(net, x, targets)
    with torch.no_grad():
        if kind == "neuron":
            _hold_outputs(modules, targets, fmt, peak)
        else:
            _hold_weights(modules, targets, fmt)
        return torch.stack([net(x[i : i + 1])[0] for i in range(len(x))])


def assert_logits_match(got: torch.Tensor, want: torch.Tensor, rtol: float) -> None:
    """Same non-finite pattern; finite values equal to rounding (relative to each row's scale)."""
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    finite = torch.isfinite(want)
    scale = want.abs().where(finite, torch.zeros_like(want)).amax(dim=-1, keepdim=True).clamp(min=1.0)
    err = ((got - want).abs() / scale).where(finite, torch.zeros_like(want))
    assert float(err.max()) <= rtol, f"max relative error {float(err.max()):.3g}"


def reference_value_inject(model: nn.Module, x: torch.Tensor, records: list[dict], fmt: str = "fp32",
                           range_detector: bool = True, value_fn=None) -> torch.Tensor:
    """Value faults, literally: per fault and image a deep copy whose one element (``kind``,
    ``layer``, ``index``) becomes ``value`` (or ``value_fn`` of the value the format held there),
    held in the format; every targeted tensor held in the format as in ``reference_inject``."""
    model = copy.deepcopy(model).eval()
    targets = _targets(model)
    peak = _profile(model, x, list(dict.fromkeys(targets + [r["layer"] for r in records])))

    def new_value(f, old: torch.Tensor, rec: dict) -> torch.Tensor:
        v = value_fn(old.reshape(1)).reshape(()) if value_fn is not None else torch.tensor(float(rec["value"]))
        return f.quantize(v.reshape(1).to(torch.float32))[0]

    results = []
    for rec in records:
        row = []
        for i in range(len(x)):
            net = copy.deepcopy(model)
            modules = dict(net.named_modules())
            with torch.no_grad():
                if rec["kind"] == "weight":
                    _hold_weights(modules, targets, fmt)
                    w = modules[rec["layer"]].weight
                    f = _fmt_for(fmt, float(model.get_submodule(rec["layer"]).weight.abs().max()))
                    w.view(-1)[rec["index"]] = new_value(f, w.view(-1)[rec["index"]].clone(), rec)
                else:
                    _hold_outputs(modules, targets, fmt, peak)
                    f = _fmt_for(fmt, peak[rec["layer"]])

                    def write(mod, args, out, rec=rec, f=f):
                        out = out.clone(memory_format=torch.contiguous_format)
                        flat = out[0].reshape(-1)
                        old = flat[rec["index"]].clone()
                        value = new_value(f, old, rec)
                        changed = not (value == old or (value.isnan() and old.isnan()))
                        if range_detector and changed:
                            value = _detected(value, peak[rec["layer"]])
                        flat[rec["index"]] = value
                        return out

                    modules[rec["layer"]].register_forward_hook(write)
                row.append(net(x[i : i + 1])[0])
        results.append(torch.stack(row))
    return torch.stack(results)

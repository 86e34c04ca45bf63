"""Which modules faults can target, and one profiling pass that learns their shapes and ranges."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Conv, Linear (attention projections and MLPs of vision transformers too) and normalisation.
INJECTABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    INJECTABLE_TYPES = (*INJECTABLE_TYPES, nn.RMSNorm)


# A transform that makes the model use a layer's weights more than once per forward pass (the
# copies of selective redundancy recompute the layer from them) marks the layer with this
# attribute. A weight fault there is in every use, so the engine cannot apply it as a change of
# the layer's output (the copies would take it for a transient fault and correct it): it runs
# the whole model with the edited weights instead, as the exact ``inject`` does.
WEIGHTS_REUSED = "headstrong_weights_reused"


def mark_weights_reused(module: nn.Module) -> None:
    """Tell the engine that ``module``'s weights are used more than once per forward pass."""
    setattr(module, WEIGHTS_REUSED, True)


def weights_reused(module: nn.Module) -> bool:
    """Whether a transform marked ``module``'s weights as used more than once per forward pass."""
    return bool(getattr(module, WEIGHTS_REUSED, False))


def is_injectable(module: nn.Module) -> bool:
    """True for the module types whose outputs (and weights) faults target by default."""
    return isinstance(module, INJECTABLE_TYPES)


def injectable_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the modules faults can target, in forward order.

    Without ``x`` the order is the order of registration (forward order for the usual vision
    models); with ``x`` one forward pass orders them by first call and drops modules that never
    run (such as ``nn.MultiheadAttention.out_proj``, whose weight is used but never called).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = [name for name, module in model.named_modules() if name and is_injectable(module)]
    if x is None:
        return names
    order: list[str] = []
    modules = dict(model.named_modules())

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if name not in seen:
                seen.add(name)
                order.append(name)
        return hook

    seen: set[str] = set()
    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        with eval_mode(model), torch.no_grad():
            run_model(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return order


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode for the duration, then restore each module's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in flags:
            module.training = training


def check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ValueError(
            "model has no parameters: fault injection needs a trained network "
            "(a module with Conv/Linear/normalisation layers)"
        )


def check_input(x: object, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images [N, C, H, W], got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}; images must be a floating tensor")
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; expected a non-empty batch, e.g. [N, C, H, W]"
        )
    return x


def run_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One forward pass, turning shape errors into a ValueError that names the input's shape."""
    try:
        out = model(x)
    except RuntimeError as error:
        raise ValueError(
            f"input of shape {tuple(x.shape)} does not fit the model ({error})"
        ) from error
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return logits of shape [N, num_classes]; for an input of shape "
            f"{tuple(x.shape)} it returned {shape}"
        )
    return out


@dataclass
class LayerStats:
    """What one profiling pass learns about a layer."""

    name: str
    type: str
    output_shape: tuple[int, ...] = ()
    weight_shape: tuple[int, ...] | None = None
    calls: int = 0
    out_max_abs: float = 0.0
    weight_max_abs: float = float("nan")
    macs: int = 0
    input_shape: tuple[int, ...] = field(default=())

    @property
    def n_neurons(self) -> int:
        return math.prod(self.output_shape)

    @property
    def n_weights(self) -> int:
        return math.prod(self.weight_shape) if self.weight_shape is not None else 0


def _macs(module: nn.Module, inp: torch.Tensor | None, out: torch.Tensor) -> int:
    per_sample = out[0].numel()
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return per_sample * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return per_sample  # elementwise scale and shift of normalisation layers


def profile_layers(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    names: Sequence[str],
    forward: Any = None,
) -> dict[str, LayerStats]:
    """Run ``batches`` through the fp32 model once, recording each named layer's statistics.

    The per-layer maximum |output| bounds the range detector and scales integer formats; it is
    taken over all batches, so it never depends on how the data was batched.
    """
    modules = dict(model.named_modules())
    stats: dict[str, LayerStats] = {}
    for name in names:
        module = modules[name]
        weight = getattr(module, "weight", None)
        st = LayerStats(name, type(module).__name__)
        if isinstance(weight, torch.Tensor):
            st.weight_shape = tuple(weight.shape)
            st.weight_max_abs = float(weight.detach().abs().max()) if weight.numel() else 0.0
        stats[name] = st
    counting = [True]

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            st = stats[name]
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"layer {name!r} returns {type(out).__name__}, not a tensor; only modules "
                    "that return one tensor can be targeted"
                )
            if counting[0]:
                st.calls += 1
            if not st.output_shape:
                st.output_shape = tuple(out.shape[1:])
                inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
                st.input_shape = tuple(inp.shape[1:]) if inp is not None else ()
                st.macs = _macs(module, inp, out)
            if out.numel():
                st.out_max_abs = max(st.out_max_abs, float(out.detach().abs().max()))
        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    seen = False
    try:
        with eval_mode(model), torch.no_grad():
            for x in batches:
                check_input(x)
                if forward is None:
                    run_model(model, x)
                else:
                    try:
                        forward(x)
                    except RuntimeError as error:
                        raise ValueError(
                            f"input of shape {tuple(x.shape)} does not fit the model ({error})"
                        ) from error
                if counting[0]:
                    counting[0] = False  # count calls per forward on the first batch only
                seen = True
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError("no batches to profile: give at least one batch of images")
    return stats


def resolve_layers(model: nn.Module, layers: Sequence[str] | str | None) -> list[str]:
    """Injectable layers plus any explicitly named modules (checked to exist)."""
    from headstrong.faults.faultset import _close_names

    modules = dict(model.named_modules())
    names = injectable_layers(model)
    if layers is None or layers == "all":
        return names
    if isinstance(layers, str):
        layers = [layers]
    valid = [n for n in modules if n]
    out = list(names)
    for name in layers:
        if name not in modules or not name:
            raise ValueError(f"unknown layer {name!r}; close names in the model: {_close_names(name, valid)}")
        if name not in out:
            out.append(name)
    return out

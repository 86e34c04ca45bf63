"""Range restriction (Ranger, Chen et al. DSN 2021) and clipped activations (FT-ClipAct, Hoang
et al. DATE 2020): values outside bounds profiled on fault-free data are clamped to the bounds
or set to zero, after every activation function or after every injectable layer.

A bit flip that turns an activation into 1e38 is then stopped one step later, at the next bound,
so the model is its own range detector: judge it with the campaign's range detector off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.fx
from torch import nn

from headstrong.harden import _graph
from headstrong.harden._data import image_batches

__all__ = ["range_restrict", "RangeBound", "bounds_table", "MODES"]

MODES = ("clamp", "zero")
_SAMPLES_PER_CHANNEL = 4096  # values kept per channel and batch for a quantile
_MAX_SAMPLES = 2_000_000  # per site, over all batches

Bounds = Union[str, Mapping[str, Any]]


class RangeBound(nn.Module):
    """Keeps a tensor inside [low, high]: clamps (``clamp``) or zeroes (``zero``) what is outside;
    NaN becomes 0. ``low``/``high`` are scalars or one value per channel (dim 1 of 4-D and 5-D
    tensors, the last dim otherwise: the features of a Linear, the channels of a ViT's tokens)."""

    def __init__(self, channels: int = 0, mode: str = "clamp") -> None:
        super().__init__()
        shape = (channels,) if channels else ()
        self.register_buffer("low", torch.full(shape, -math.inf))
        self.register_buffer("high", torch.full(shape, math.inf))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _bound(x, self.low, self.high, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, channels={self.low.numel() if self.low.ndim else 'all'}"


def channel_dim(ndim: int) -> int:
    return 1 if ndim >= 4 else -1


def _bound(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, mode: str) -> torch.Tensor:
    """The restriction itself: a leaf for torch.fx (it branches on whether autograd is on).

    Without autograd (inference, campaigns) it works in place with scalar bounds as Python
    floats: the cheapest kernels, which keeps the latency overhead small. The input is the
    fresh output of the activation or layer before it, read by nothing else.
    """
    if low.ndim == 0:
        lo, hi = float(low), float(high)
    else:
        shape = [1] * x.ndim
        shape[channel_dim(x.ndim)] = -1
        lo, hi = low.view(shape), high.view(shape)  # type: ignore[assignment]
    inplace = not (torch.is_grad_enabled() and x.requires_grad)
    if mode == "zero":
        outside = x.clamp(lo, hi) != x  # True for NaN too
        return x.masked_fill_(outside, 0.0) if inplace else x.masked_fill(outside, 0.0)
    if inplace:
        return x.clamp_(lo, hi).nan_to_num_(0.0)
    return x.clamp(lo, hi).nan_to_num(0.0)


torch.fx.wrap("_bound")


@dataclass
class _Profile:
    """Running statistics of one site: exact min/max and a subsample for quantiles."""

    low: Optional[torch.Tensor] = None
    high: Optional[torch.Tensor] = None
    samples: Optional[list[torch.Tensor]] = None
    kept: int = 0
    finite: bool = False


class _Observer:
    """A forward pre-hook on a ``RangeBound`` (bounds still infinite) that records its input
    before the bound (which works in place) sees it."""

    def __init__(self, per_channel: bool, quantile: Optional[float], generator: torch.Generator) -> None:
        self.per_channel = per_channel
        self.quantile = quantile
        self.generator = generator
        self.stats = _Profile(samples=[] if quantile is not None else None)

    def __call__(self, module: nn.Module, args: Any) -> None:
        x = args[0].detach().float()
        if self.per_channel:
            x = x.movedim(channel_dim(x.ndim), 0).reshape(x.shape[channel_dim(x.ndim)], -1)
        else:
            x = x.reshape(1, -1)
        finite = torch.isfinite(x)
        if not finite.any():
            return
        st = self.stats
        st.finite = True
        big = torch.finfo(torch.float32).max
        low = torch.where(finite, x, torch.full_like(x, big)).amin(1)
        high = torch.where(finite, x, torch.full_like(x, -big)).amax(1)
        st.low = low if st.low is None else torch.minimum(st.low, low)
        st.high = high if st.high is None else torch.maximum(st.high, high)
        if st.samples is not None and st.kept < _MAX_SAMPLES:
            take = min(x.shape[1], _SAMPLES_PER_CHANNEL)
            pick = torch.randperm(x.shape[1], generator=self.generator)[:take].to(x.device)
            part = x[:, pick]
            st.samples.append(part.cpu())
            st.kept += part.numel()

    def bounds(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        st = self.stats
        if not st.finite or st.low is None or st.high is None:
            raise ValueError(f"site {key!r} saw no finite value in the profiling data; bounds need real activations")
        if self.quantile is None or self.quantile == 1.0 or not st.samples:
            return st.low.cpu(), st.high.cpu()
        values = torch.cat(st.samples, dim=1)
        q = torch.tensor([1.0 - self.quantile, self.quantile])
        rows = []
        for row in values:
            row = row[torch.isfinite(row)]
            rows.append(torch.quantile(row, q) if len(row) else torch.tensor([0.0, 0.0]))
        qs = torch.stack(rows)  # [channels, 2]
        return qs[:, 0], qs[:, 1]


def _parse_bounds(bounds: Bounds) -> tuple[Optional[float], Optional[Mapping[str, Any]]]:
    """``(quantile, mapping)``: "max" -> (None, None), "q0.999" -> (0.999, None)."""
    if isinstance(bounds, Mapping):
        return None, bounds
    if bounds == "max":
        return None, None
    if isinstance(bounds, str) and bounds.startswith("q"):
        try:
            q = float(bounds[1:])
        except ValueError:
            q = math.nan
        if not 0.0 < q <= 1.0:  # NaN fails too
            raise ValueError(f"quantile bounds {bounds!r} must be q followed by a number in (0, 1], e.g. 'q0.999'")
        return q, None
    raise ValueError(
        f"bounds must be 'max', a quantile such as 'q0.999', or a mapping of site name to (low, high); got {bounds!r}"
    )


def _check_options(mode: str, where: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)} (clamp: Ranger, zero: clipped activation)")
    if where not in _graph.WHERE:
        raise ValueError(f"unknown where {where!r}; expected one of {', '.join(_graph.WHERE)}")


def _options(bounds: Bounds, mode: str, where: str, per_channel: bool) -> dict[str, Any]:
    spec = "mapping" if isinstance(bounds, Mapping) else str(bounds)
    return {"bounds_spec": spec, "mode": mode, "where": where, "per_channel": bool(per_channel)}


def range_restrict(
    model: nn.Module,
    data: Any = None,
    *,
    bounds: Bounds = "max",
    mode: str = "clamp",
    where: str = "activations",
    per_channel: bool = False,
    batch_size: int = 256,
    seed: int = 0,
) -> nn.Module:
    """A copy of ``model`` whose activations stay inside bounds profiled on ``data``.

    ``where="activations"``: after every activation function (ReLU, GELU, SiLU, Hardswish, ...,
    modules or functional calls), found with torch.fx; a model fx cannot trace gets forward hooks
    on its activation modules (its functional activations are then not restricted).
    ``where="layers"``: after every injectable layer (needs torch.fx: a hook there would run
    before the engine's fault and bound nothing). ``where="activations+logits"``: after every
    activation and on the model's output, so the classification layer is bounded too. ``bounds``: ``"max"`` (the profiled min and
    max; the clean outputs on ``data`` are then unchanged), ``"qX"`` (the (1-X) and X quantiles,
    0 < X <= 1) or a mapping of site name to ``(low, high)`` (scalars, or one per channel with
    ``per_channel``; unlisted sites are not restricted, ``data`` is not needed). ``mode``:
    ``clamp`` (Ranger) or ``zero`` (clipped activation). NaN always becomes 0.

    The result keeps every original module name (faults, campaigns and reports see the same
    layers), records the bounds in ``model.hardening`` (saved with checkpoints) and never shares
    a tensor with ``model``. Restricting an already restricted model again with the same options
    returns a copy; with other options it is refused.
    """
    _check_options(mode, where)
    quantile, mapping = _parse_bounds(bounds)
    options = _options(bounds, mode, where, per_channel)
    previous = [r for r in _graph.records(model) if r.get("method") == "range"]
    if previous:
        old = {k: previous[-1].get(k) for k in options}
        if old == options and mapping is None:
            return _graph.fresh_copy(model)
        raise ValueError(
            f"model is already range-restricted ({', '.join(f'{k}={v!r}' for k, v in old.items())}); "
            "restrict the unhardened model instead of restricting twice with other options"
        )
    work = _graph.fresh_copy(model)
    gm, why = _graph.trace(work)
    if gm is None and where == "layers":
        raise ValueError(
            f"where='layers' needs a model torch.fx can trace ({why}); use where='activations' (hooks on "
            "activation modules work without tracing)"
        )
    sites = _graph.fx_sites(gm, where) if gm is not None else _graph.hook_sites(work, where)
    if not [s for s in sites if s.key != _graph.LOGITS]:
        hint = " (it has no activation functions); try where='layers'" if where.startswith("activations") else ""
        raise ValueError(f"found nowhere to restrict in {type(model).__name__}{hint}")
    if mapping is not None:
        chosen = _mapping_bounds(mapping, sites, per_channel)
    else:
        chosen = None
    hardened, modules = _install(gm if gm is not None else work, work, sites, mode, chosen, per_channel,
                                 traced=gm is not None)
    if chosen is None:
        chosen = _profile(hardened, modules, data, per_channel, quantile, batch_size, seed)
        for key, (low, high) in chosen.items():
            modules[key].low.copy_(low.reshape(modules[key].low.shape))
            modules[key].high.copy_(high.reshape(modules[key].high.shape))
    record = {
        "method": "range", **options, "tracer": "fx" if gm is not None else "hooks",
        "sites": {key: _as_list(modules[key]) for key in modules},
    }
    return _graph.add_record(hardened, record)


def _as_list(module: RangeBound) -> dict[str, Any]:
    return {"low": module.low.tolist(), "high": module.high.tolist(), "channels": int(module.low.numel()) if module.low.ndim else 0}


def _mapping_bounds(mapping: Mapping[str, Any], sites: list[_graph.Site], per_channel: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    keys = [s.key for s in sites]
    unknown = [k for k in mapping if k not in keys]
    if unknown:
        raise ValueError(f"unknown site(s) {', '.join(map(repr, unknown))} in bounds; sites of this model: {', '.join(keys)}")
    out = {}
    for key, value in mapping.items():
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"bounds[{key!r}] must be a (low, high) pair; got {value!r}")
        low, high = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in value)
        if low.shape != high.shape or (not per_channel and low.numel() != 1):
            raise ValueError(f"bounds[{key!r}]: low and high must be single numbers (or per-channel lists of one length with per_channel=True)")
        if torch.isnan(low).any() or torch.isnan(high).any() or (low > high).any():
            raise ValueError(f"bounds[{key!r}] = {value!r}: need low <= high, no NaN")
        out[key] = (low, high)
    return out


def _install(
    gm: nn.Module, source: nn.Module, sites: list[_graph.Site], mode: str,
    chosen: Optional[dict[str, tuple[torch.Tensor, torch.Tensor]]], per_channel: bool, *, traced: bool,
) -> tuple[nn.Module, dict[str, RangeBound]]:
    """Insert a ``RangeBound`` after each site (channel counts from ``chosen`` or found later)."""
    modules: dict[str, RangeBound] = {}
    for site in sites:
        if chosen is not None and site.key not in chosen:
            continue
        channels = 0
        if chosen is not None and per_channel:
            channels = int(chosen[site.key][0].numel())
        bound = RangeBound(channels, mode)
        if chosen is not None:
            bound.low.copy_(chosen[site.key][0].reshape(bound.low.shape))
            bound.high.copy_(chosen[site.key][1].reshape(bound.high.shape))
        target = _graph.new_slot(gm, "range", bound)
        if traced:
            _graph.insert_after(gm, site.node, target)
        else:
            source.get_submodule(site.module).register_forward_hook(_BoundHook(bound))
        modules[site.key] = bound
    if traced:
        _graph.finish(gm, source)
    return gm, modules


class _BoundHook:
    """Forward hook applying a ``RangeBound`` to a module's output (deep-copies with the model)."""

    def __init__(self, bound: RangeBound) -> None:
        self.bound = bound

    def __call__(self, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        return self.bound(out)


def _profile(
    model: nn.Module, modules: dict[str, RangeBound], data: Any, per_channel: bool,
    quantile: Optional[float], batch_size: int, seed: int,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if data is None:
        raise ValueError("range_restrict needs data to profile bounds on (or bounds= a mapping of site to (low, high))")
    generator = torch.Generator().manual_seed(seed)
    observers = {key: _Observer(per_channel, quantile, generator) for key in modules}
    handles = [modules[key].register_forward_pre_hook(observers[key]) for key in modules]
    seen = 0
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for x in image_batches(data, batch_size):
                if len(x) == 0:
                    continue
                model(x.to(next(model.parameters()).device))
                seen += len(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    if seen == 0:
        raise ValueError("the profiling data is empty; give at least one image to profile bounds on")
    out = {}
    for key, obs in observers.items():
        low, high = obs.bounds(key)
        if per_channel and modules[key].low.ndim == 0:
            modules[key].low = torch.full_like(low, -math.inf)
            modules[key].high = torch.full_like(high, math.inf)
        out[key] = (low, high)
    return out


def bounds_table(model: nn.Module) -> list[dict[str, Any]]:
    """One row per restricted site of a range-restricted model: site, mode, low, high (the
    extremes over channels for per-channel bounds)."""
    rows = []
    for record in _graph.records(model):
        if record.get("method") != "range":
            continue
        for key, entry in record["sites"].items():
            low = entry["low"] if isinstance(entry["low"], list) else [entry["low"]]
            high = entry["high"] if isinstance(entry["high"], list) else [entry["high"]]
            rows.append({"site": key, "mode": record["mode"], "low": min(low), "high": max(high),
                         "channels": entry["channels"]})
    return rows


def rebuild(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Apply a saved range restriction to a freshly built model (bounds from the record)."""
    per_channel = bool(record["per_channel"])
    chosen = {key: (torch.as_tensor(e["low"], dtype=torch.float32).reshape(-1),
                    torch.as_tensor(e["high"], dtype=torch.float32).reshape(-1))
              for key, e in record["sites"].items()}
    work = model
    if record.get("tracer") == "fx":
        gm, why = _graph.trace(work)
        if gm is None:
            raise ValueError(f"this hardened checkpoint was traced with torch.fx, which now fails: {why}")
        sites = _graph.fx_sites(gm, record["where"])
    else:
        gm, sites = None, _graph.hook_sites(work, record["where"])
    hardened, _ = _install(gm if gm is not None else work, work, sites, record["mode"], chosen,
                           per_channel, traced=gm is not None)
    return _graph.add_record(hardened, dict(record))

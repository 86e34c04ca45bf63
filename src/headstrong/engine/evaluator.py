"""``FaultEvaluator``: the fast core every fault model runs through.

A fault is a set of element edits (``FaultEdits``: a single flip is one edit; a ``FaultSet`` of
sites becomes edits through the evaluator's fault model). The evaluator takes pairs (fault,
image) and returns ``Outcomes`` per pair. Speed comes from (DESIGN.md, "Where the speed comes
from"):

* many pairs per forward pass: a batch of rows, each its own fault on its own image;
* upstream reuse: the golden values live across the faulty layer are computed once per batch of
  images (torch.fx split) and only the rest of the network runs again (``"fx"``); a replay that
  drops a pair as soon as its change has been masked (``prune``); models that do not trace use a
  full forward pass with hooks (``"hooks"``);
* weight faults of one element by the delta method, ``Δw × input patch`` added to one output
  channel from the cached layer input (``"delta"``); in the last Linear layer no network at all,
  ``Δlogit_i = feature_j × Δw_ij`` with per-class tables, O(1) per pair (``"analytic"``); faults of
  many weight elements run the network once per fault over its images (``"weights"``);
* edits as integer operations on bit patterns (``headstrong.engine.edits``), on the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from headstrong import formats
from headstrong.engine.edits import META, NEURON, WEIGHT, edit_sparse, edit_tensor, edited_elements
from headstrong.engine.inject import as_faultset, hold_hooks
from headstrong.engine.layers import (
    INJECTABLE_TYPES,
    LayerStats,
    check_input,
    check_model,
    eval_mode,
    profile_layers,
    resolve_layers,
    weights_reused,
)
from headstrong.engine.outcomes import Outcomes
from headstrong.engine.sites import apply_weight_faults, is_identity_format, layer_format, supports_delta
from headstrong.engine.split import PrunedReplay, SplitModel
from headstrong.faults import KINDS, FaultSet
from headstrong.faults.models import FaultEdits, get_fault_model

SPLITS = ("auto", "fx", "hooks")


@dataclass(frozen=True)
class Golden:
    """The golden run of a batch: logits, prediction, loss and top-2 margin per image."""

    logits: torch.Tensor
    golden_pred: torch.Tensor
    golden_loss: torch.Tensor
    top2_diff: torch.Tensor


@dataclass
class _Cached:
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    pred: torch.Tensor
    top2: torch.Tensor
    values: dict[Any, Any] = field(default_factory=dict)
    nbytes: int = 0
    nonfinite: int = 0  # images whose golden logits hold NaN or Inf


@dataclass(frozen=True)
class _Pairs:
    """Pairs (fault, image row) and every (edit, pair) that applies to them."""

    fault: torch.Tensor  # [P] fault number of each pair
    image: torch.Tensor  # [P] image row of each pair
    edit: torch.Tensor  # [J] edit row
    pair: torch.Tensor  # [J] pair position

    def select(self, positions: torch.Tensor) -> _Pairs:
        """The pairs at ``positions`` (renumbered 0..len-1) with their edits."""
        local = torch.full((len(self.fault),), -1, dtype=torch.int64)
        local[positions] = torch.arange(len(positions))
        keep = local[self.pair] >= 0
        return _Pairs(self.fault[positions], self.image[positions], self.edit[keep], local[self.pair[keep]])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))


def _batched(value: Any, batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """``(p1 - p2) * 100`` of ``softmax(logits)``: the golden model's margin per sample."""
    probs = torch.softmax(logits.float(), dim=1)
    if probs.shape[1] < 2:
        return torch.full((len(probs),), 100.0, device=probs.device)
    top = probs.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) * 100


def _grid(rows: torch.Tensor, index: torch.Tensor, n_x: int) -> torch.Tensor | None:
    """When pairs are faults x images 0..n_x-1 in order (each fault's ``index`` constant along its
    row), the pair position of each fault's first image; else None."""
    if not len(rows) or len(rows) % n_x:
        return None
    first = torch.arange(0, len(rows), n_x)
    if not torch.equal(rows.view(-1, n_x), torch.arange(n_x, device=rows.device).expand(len(first), n_x)):
        return None
    if not bool((index.view(-1, n_x) == index[first][:, None]).all()):
        return None
    return first


def _put(column: torch.Tensor, at: torch.Tensor, values: torch.Tensor) -> None:
    """``column[at] = values``, as one slice copy when ``at`` is a run of positions. Pair positions
    are always increasing (taken in order from ``arange``), so the ends tell a run."""
    values = values.to(column.dtype).cpu()
    if len(at) and int(at[-1]) - int(at[0]) == len(at) - 1:
        column[int(at[0]) : int(at[0]) + len(at)] = values
    else:
        column[at] = values


def join_pairs(edits: FaultEdits, fault: torch.Tensor, image: torch.Tensor) -> _Pairs:
    """Every (edit, pair) that applies: an edit meets each pair of its fault, or (with a sample)
    only the pair on that image row. Vectorised: a ragged join on the fault number."""
    order = torch.argsort(fault, stable=True)
    sorted_faults = fault[order]
    starts = torch.searchsorted(sorted_faults, edits.fault)
    counts = torch.searchsorted(sorted_faults, edits.fault, right=True) - starts
    e_rep = torch.repeat_interleave(torch.arange(edits.n_edits), counts)
    within = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    p = order[starts.repeat_interleave(counts) + within]
    sample = edits.sample[e_rep]
    keep = (sample < 0) | (sample == image[p])
    return _Pairs(fault, image, e_rep[keep], p[keep])


class FaultEvaluator:
    """Outcomes of (fault, image) pairs for any fault model, through the fastest exact path.

    ``fmt``: the number format the targeted tensors are held in; ``range_detector``: clamp
    edited activations to each layer's profiled max |x| (neuron faults); ``fault_model``: how
    fault sites (a ``FaultSet`` or records) become edits (``"flip"``: one bit each);
    ``layers``: extra modules to profile and hold besides the injectable ones; ``split``:
    ``"auto"`` (fx when the model traces), ``"fx"`` (error if it does not) or ``"hooks"``;
    ``chunk_size``: pairs per forward pass (default: the batch size); ``prune``: on the fx path,
    cache every golden value of the batch (when that fits in ``cache_bytes``) and drop a pair from
    the replay as soon as its change has been masked (results unchanged, about half the work
    skipped for typical CNNs); ``channels_last``: 4-D images in channels-last memory format
    (default: on the CPU, where convolutions run faster so; results equal to rounding).
    """

    def __init__(
        self,
        model: nn.Module,
        fmt: Any = "fp32",
        range_detector: bool = True,
        device: str | torch.device = "cpu",
        *,
        layers: Sequence[str] | None = None,
        split: str = "auto",
        chunk_size: int | None = None,
        prune: bool = True,
        cache_bytes: int = 1 << 30,
        channels_last: bool | None = None,
        fault_model: Any = "flip",
    ) -> None:
        check_model(model)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.model = model
        self.fmt = formats.get(fmt)
        self.fault_model = get_fault_model(fault_model)
        self.fault_model.check(self.fmt)
        self.range_detector = bool(range_detector)
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.prune = bool(prune)
        self.channels_last = (self.device.type == "cpu") if channels_last is None else bool(channels_last)
        self.cache_bytes = int(cache_bytes)
        self.layers = resolve_layers(model, layers)
        self.paths: dict[tuple[str, str], str] = {}  # (kind, layer) -> the path that ran last
        self.last_path: str | None = None
        self.split_error: str | None = None
        self.replayed_pairs = 0  # pairs that went through a pruned replay (prune=True, fx path)
        self._replays: dict[tuple[str, str], PrunedReplay] = {}
        self._modules = dict(model.named_modules())
        self._identity = is_identity_format(self.fmt)
        self._stats: dict[str, LayerStats] | None = None
        self._never_ran: set[str] = set()
        self._out_fmt: dict[str, Any] = {}
        self._w_fmt: dict[str, Any] = {}
        self._golden_cache: dict[str, list[_Cached]] = {}
        self._keys: dict[int, set[str]] = {}
        self._scratch: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._split: SplitModel | None = None
        if split != "hooks":
            try:
                self._split = SplitModel(model, self.layers)
            except Exception as error:  # noqa: BLE001  any tracing failure means: use hooks
                if split == "fx":
                    raise ValueError(f"the model cannot be split with torch.fx: {error}") from error
                self.split_error = f"{type(error).__name__}: {error}"
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        moved = any(t.device != self.device for t in tensors.values())
        self._base = {k: v.detach().to(self.device) for k, v in tensors.items()} if moved else None
        self._weight_state: dict[str, torch.Tensor] = {}

    # state on the device --------------------------------------------------------------------
    def _tensor(self, name: str) -> torch.Tensor:
        if self._base is not None:
            return self._base[name]
        return self.model.get_parameter(name)

    def _state(self, kind: str) -> dict[str, torch.Tensor] | None:
        if kind == "weight" and self._weight_state:
            return {**(self._base or {}), **self._weight_state}
        return self._base

    def _call(self, module: nn.Module, state: dict[str, torch.Tensor] | None, *args: Any) -> Any:
        if state is None:
            return module(*args)
        keys = self._keys.get(id(module))
        if keys is None:
            keys = {*dict(module.named_parameters()), *dict(module.named_buffers())}
            self._keys[id(module)] = keys
        return functional_call(module, {k: v for k, v in state.items() if k in keys}, args)

    def _held_weight(self, layer: str) -> torch.Tensor:
        """The layer's weight as the golden model holds it (quantised to the format)."""
        held = self._weight_state.get(f"{layer}.weight")
        return self._tensor(f"{layer}.weight").detach() if held is None else held

    def _layer_params(self, layer: str) -> dict[str, torch.Tensor]:
        """The layer's own tensors other than its weight (bias, running statistics)."""
        module = self._modules[layer]
        state = self._state("weight") or {}
        return {k: state.get(f"{layer}.{k}", v.detach()) for k, v in
                [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)] if k != "weight"}

    # profiling ------------------------------------------------------------------------------
    def profile(self, batches: Iterable[Any]) -> Any:
        """Learn each layer's shapes and max |x| (output and weight) over ``batches``.

        The maxima bound the range detector and scale integer formats; they are per layer over
        all the data, so results never depend on batching. Returns ``layer_info``.
        """

        seen: list[tuple[torch.Tensor, Any, torch.Tensor]] = []

        def images() -> Iterator[torch.Tensor]:
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                x = check_input(x).to(self.device)
                seen.append((x, batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None, x))
                yield x

        def forward(x: torch.Tensor) -> Any:
            logits = self._call(self.model, state, x)
            seen[-1] = (seen[-1][0], seen[-1][1], logits)
            return logits

        state = self._base
        with torch.no_grad():
            stats = profile_layers(self.model, images(), self.layers, forward=forward)
        missing = [n for n in self.layers if stats[n].calls == 0]
        explicit = [n for n in missing if not isinstance(self._modules[n], INJECTABLE_TYPES)]
        if explicit:
            raise ValueError(f"layer {explicit[0]!r} never runs in the model's forward pass")
        self._never_ran = set(missing)
        self.layers = [n for n in self.layers if stats[n].calls > 0]
        self._stats = {n: stats[n] for n in self.layers}
        self._out_fmt = {n: layer_format(self.fmt, s.out_max_abs) for n, s in self._stats.items()}
        self._w_fmt = {n: layer_format(self.fmt, s.weight_max_abs)
                       for n, s in self._stats.items() if s.weight_shape is not None}
        self._weight_state = {}
        if not self._identity:
            for n, f in self._w_fmt.items():
                w = self._tensor(f"{n}.weight").detach()
                self._weight_state[f"{n}.weight"] = f.quantize(w).to(w.dtype)
        self._golden_cache.clear()
        self._scratch.clear()
        if self._identity:  # nothing is held in another format: the profiling pass is the golden pass
            for x, y, logits in reversed(seen):
                if y is not None and isinstance(logits, torch.Tensor) and logits is not x:
                    x, y = self._check_xy(x, y)
                    for kind in KINDS:
                        self._remember(kind, x, y, logits, {})
        return self.layer_info

    @property
    def layer_info(self) -> Any:
        """One row per profiled layer: type, shapes, sizes, MACs and profiled maxima."""
        import pandas as pd

        stats = self._require_profile()
        return pd.DataFrame([
            {"layer": s.name, "type": s.type, "output_shape": s.output_shape,
             "weight_shape": s.weight_shape, "n_neurons": s.n_neurons, "n_weights": s.n_weights,
             "macs": s.macs, "out_max_abs": s.out_max_abs, "weight_max_abs": s.weight_max_abs}
            for s in stats.values()
        ])

    def sizes(self, kind: str) -> dict[str, int]:
        """Fault sites per profiled layer: neurons of one sample's output, or weights."""
        stats = self._require_profile()
        return {n: (s.n_neurons if kind == "neuron" else s.n_weights) for n, s in stats.items()
                if (s.n_neurons if kind == "neuron" else s.n_weights) > 0}

    def _require_profile(self) -> dict[str, LayerStats]:
        if self._stats is None:
            raise ValueError("call profile(batches) before evaluate: the layers' ranges come from it")
        return self._stats

    # sessions and golden runs -------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self, kind: str) -> Iterator[None]:
        handles: list[Any] = []
        with eval_mode(self.model), torch.no_grad():
            try:
                if kind == "neuron" and not self._identity:
                    handles = hold_hooks(self._modules, self._out_fmt)
                yield
            finally:
                for handle in handles:
                    handle.remove()

    def _check_xy(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_input(x).to(self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.shape != (len(x),):
            raise ValueError(
                f"labels must be an integer tensor of shape ({len(x)},), one per image; "
                f"got dtype {y.dtype}, shape {tuple(y.shape)}"
            )
        return x, y.to(self.device, torch.int64)

    def _golden(self, x: torch.Tensor, y: torch.Tensor, kind: str, wanted: Sequence[Any] = ()) -> _Cached:
        """The golden run of this batch, refused when its logits are not all finite (a fault's
        effect cannot be measured against NaN)."""
        entry = self._golden_entry(x, y, kind, wanted)
        if entry.nonfinite:
            raise self._nonfinite_error(kind, entry.nonfinite, len(x))
        return entry

    def _nonfinite_error(self, kind: str, bad: int, total: int) -> ValueError:
        return ValueError(
            f"the golden model ({kind} tensors held in {self.fmt.name}) gives non-finite logits (NaN or Inf) "
            f"on {bad} of {total} images; a fault's effect cannot be measured against them: check the "
            "model's weights (a NaN learning rate?) and the format's range"
        )

    def _golden_entry(self, x: torch.Tensor, y: torch.Tensor, kind: str, wanted: Sequence[Any] = ()) -> _Cached:
        """The golden run of this batch: from the cache (several batches, most recent first, up
        to ``cache_bytes``), or computed, with the values of the ``wanted`` graph nodes."""
        entries = self._golden_cache.setdefault(kind, [])
        for i, entry in enumerate(entries):
            if _same(entry.x, x) and _same(entry.y, y):
                entries.pop(i)
                if all(n in entry.values for n in wanted):
                    entries.insert(0, entry)
                    return entry
                break
        state = self._state(kind)
        if wanted and self._split is not None:
            logits, values = self._split.capture(x, list(wanted), lambda gm, a: self._call(gm, state, a))
        else:
            logits, values = self._call(self.model, state, x), {}
        return self._remember(kind, x, y, logits, values)

    def _remember(self, kind: str, x: torch.Tensor, y: torch.Tensor, logits: Any, values: dict[Any, Any]) -> _Cached:
        """Check a golden run's shape and labels and cache it (most recent first, within
        ``cache_bytes``), counting the images whose logits are not finite."""
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(x):
            raise ValueError("the model must return logits of shape [N, num_classes]")
        if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
            raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1} for {logits.shape[1]} classes")
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        entry = _Cached(x, y, logits, loss, logits.argmax(1), top2_margin(logits), values,
                        nonfinite=int((~torch.isfinite(logits).all(1)).sum()))
        entry.nbytes = sum(v.nbytes for v in values.values() if isinstance(v, torch.Tensor)) + x.nbytes
        entries = self._golden_cache.setdefault(kind, [])
        entries.insert(0, entry)
        total = 0
        for i, old in enumerate(entries):
            total += old.nbytes
            if i and total > self.cache_bytes:
                del entries[i:]
                break
        return entry

    def golden(self, x: torch.Tensor, y: Any, kind: str = "neuron", batch_size: int | None = None) -> Golden:
        """The golden run on ``x`` with ``kind``'s tensors held in the format (cached per batch of
        ``batch_size`` images, default all): logits, prediction, loss and top-2 margin. Golden
        logits that are not finite are an error that says on how many of the images."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        self._require_profile()
        x, y = self._check_xy(x, y)
        size = batch_size or len(x)
        with self._session(kind):
            parts = [self._golden_entry(x[i : i + size], y[i : i + size], kind) for i in range(0, len(x), size)]
        bad = sum(p.nonfinite for p in parts)
        if bad:
            raise self._nonfinite_error(kind, bad, len(x))
        return Golden(*(torch.cat([getattr(p, k) for p in parts]).cpu() for k in ("logits", "pred", "loss", "top2")))

    # entry points ---------------------------------------------------------------------------
    def edits_of(self, faults: Any) -> FaultEdits:
        """Faults as edits: ``FaultEdits`` as given, sites (a FaultSet or records) through the
        evaluator's fault model (their sample column kept)."""
        if isinstance(faults, FaultEdits):
            return faults
        return self.fault_model.from_sites(as_faultset(faults), self.fmt)

    def evaluate(self, x: torch.Tensor, y: Any, faults: Any) -> Outcomes:
        """Outcomes per fault, 1-D: ``faults[i]`` applied to ``x[i]`` alone, or to the image its
        ``sample`` names (sites); edits given as ``FaultEdits`` have sample -1 or 0 (the fault's
        own inference)."""
        x, y = self._check_xy(x, y)
        edits = self.edits_of(faults)
        n = len(edits)
        sample = edits.sample
        if not isinstance(faults, FaultEdits) and bool((sample >= 0).any()):
            if not bool((sample >= 0).all()):
                raise ValueError("either every fault names its sample or none does (then faults[i] meets x[i])")
            rows = torch.zeros(n, dtype=torch.int64)
            rows[edits.fault] = sample
            if int(rows.max()) >= len(x):
                raise ValueError(f"fault sample {int(rows.max())} out of range for a batch of {len(x)} images")
        else:
            if n != len(x):
                raise ValueError(
                    f"{n} faults for {len(x)} images: without a sample column, faults[i] applies to x[i], "
                    "so give one fault per image (or set each fault's sample)"
                )
            if bool((sample > 0).any()):
                raise ValueError("in evaluate, fault i meets x[i] alone: edit samples must be -1 or 0")
            rows = torch.arange(n)
        edits = edits.with_sample(torch.full_like(sample, -1))
        return self._run(x, y, edits, torch.arange(n), rows)

    def evaluate_all_pairs(self, x: torch.Tensor, y: Any, faults: Any) -> Outcomes:
        """Outcomes of every fault on every image, 2-D ``[len(faults), len(x)]``. A site's sample
        is ignored (every fault meets every image); an edit with a sample meets that image only
        (activations resampled per inference)."""
        x, y = self._check_xy(x, y)
        edits = self.edits_of(faults)
        if not isinstance(faults, FaultEdits):
            edits = edits.with_sample(torch.full_like(edits.sample, -1))
        n_f, n_x = len(edits), len(x)
        out = self._run(x, y, edits, torch.arange(n_f).repeat_interleave(n_x), torch.arange(n_x).repeat(n_f))
        return out.map(lambda t: t.view(n_f, n_x))

    def evaluate_pairs(self, x: torch.Tensor, y: Any, faults: Any, fault: torch.Tensor,
                       image: torch.Tensor) -> Outcomes:
        """Outcomes of the pairs (``faults[fault[p]]``, ``x[image[p]]``), 1-D: the campaign's entry,
        where a permanent fault meets several images. Edits with a sample meet that image only."""
        x, y = self._check_xy(x, y)
        edits = self.edits_of(faults)
        fault, image = torch.as_tensor(fault, dtype=torch.int64), torch.as_tensor(image, dtype=torch.int64)
        if fault.shape != image.shape or fault.dim() != 1:
            raise ValueError(f"fault and image must be 1-D and alike, got {tuple(fault.shape)} and {tuple(image.shape)}")
        if len(fault) and (int(fault.min()) < 0 or int(fault.max()) >= len(edits)):
            raise ValueError(f"pair fault numbers must lie in 0..{len(edits) - 1}")
        if len(image) and (int(image.min()) < 0 or int(image.max()) >= len(x)):
            raise ValueError(f"pair image rows must lie in 0..{len(x) - 1}")
        return self._run(x, y, edits, fault, image)

    # the one pipeline -----------------------------------------------------------------------
    def _validate(self, edits: FaultEdits, n_x: int) -> None:
        stats = self._require_profile()
        for name in edits.layer_names:
            if name not in stats:
                if name in self._never_ran:
                    raise ValueError(f"layer {name!r} never runs in the model's forward pass")
                if name in self._modules and name:
                    raise ValueError(
                        f"layer {name!r} was not profiled; pass layers=[{name!r}] to FaultEvaluator "
                        "to target it (profiled layers: injectable ones)"
                    )
        edits.validate(self.model, self.fmt, {n: s.output_shape for n, s in stats.items()})
        if bool((edits.sample >= n_x).any()):
            raise ValueError(f"edit sample {int(edits.sample.max())} out of range for {n_x} inputs")

    def _kinds(self, edits: FaultEdits) -> torch.Tensor:
        """Each fault's kind code; a fault without edits takes the campaign's kind."""
        n_f = len(edits)
        hi = torch.full((n_f,), -1, dtype=torch.int64).scatter_reduce_(
            0, edits.fault, edits.kind_codes, "amax", include_self=False)
        lo = torch.full((n_f,), -1, dtype=torch.int64).scatter_reduce_(
            0, edits.fault, edits.kind_codes, "amin", include_self=False)
        if bool(((hi != lo) & (hi >= 0)).any()):
            raise ValueError("a fault mixes neuron and weight edits; the evaluator takes one kind per fault "
                             "(inject takes both)")
        return torch.where(hi < 0, torch.full_like(hi, KINDS.index(edits.base_kind)), hi)

    def _run(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, fault: torch.Tensor,
             image: torch.Tensor) -> Outcomes:
        self._validate(edits, len(x))
        out = Outcomes.empty(len(fault))
        kind_of_pair = self._kinds(edits)[fault]
        edited = torch.zeros(len(edits), dtype=torch.bool)
        edited[edits.fault] = True
        has_edits = edited[fault]
        every = torch.arange(len(fault))
        for code in (NEURON, WEIGHT):
            sel = kind_of_pair == code
            if not bool(sel.any()):
                continue
            whole = bool(sel.all())  # the usual case: every pair of one kind, every fault edited
            mine = every if whole else sel.nonzero().flatten()
            if whole and bool(has_edits.all()):
                busy, busy_fault, busy_image = every, fault, image
            else:
                busy = mine[has_edits[mine]]
                busy_fault, busy_image = fault[busy], image[busy]
            kind = KINDS[code]
            with self._session(kind):
                if code == NEURON:
                    self._neurons(x, y, edits, join_pairs(edits, busy_fault, busy_image), busy, out)
                else:
                    self._weights(x, y, edits, busy_fault, busy_image, busy, out)
                golden = self._golden(x, y, kind)  # cached by the paths above (or computed here)
            rows = (image if whole else image[mine]).to(golden.pred.device)
            _put(out.golden_pred, mine, golden.pred.index_select(0, rows))
            _put(out.golden_loss, mine, golden.loss.index_select(0, rows))
            _put(out.top2_diff, mine, golden.top2.index_select(0, rows))
            if busy is not every:  # faults without an edit are golden runs, and masked
                none = mine[~has_edits[mine]]
                out.faulty_pred[none] = out.golden_pred[none]
                out.faulty_loss[none] = out.golden_loss[none]
        return out

    def _store(self, out: Outcomes, at: torch.Tensor, logits: torch.Tensor, golden: _Cached, y: torch.Tensor,
               rows: torch.Tensor, changed: torch.Tensor) -> None:
        """Outcomes of the faulty ``logits`` of pairs ``at`` (on images ``rows``)."""
        rows = rows.to(logits.device)
        f_loss = F.cross_entropy(logits.float(), y.index_select(0, rows), reduction="none")
        out.faulty_pred[at] = logits.argmax(1).cpu()
        out.faulty_loss[at] = f_loss.cpu()
        out.delta_loss[at] = (f_loss - golden.loss.index_select(0, rows)).abs().cpu()
        out.nonfinite[at] = (~torch.isfinite(logits).all(1)).cpu()
        out.masked[at] = ~changed.cpu()

    def _chunks(self, n: int, batch: int) -> Iterator[slice]:
        size = self.chunk_size or batch
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    def _cut(self, layer: str) -> Any:
        split = self._split
        return split.cut(layer) if split is not None and split.can_split(layer) else None

    def _note(self, kind: str, layers: Iterable[str], path: str) -> None:
        for layer in layers:
            self.paths[(kind, layer)] = path
        self.last_path = path

    # neuron faults ----------------------------------------------------------------------------
    def _neurons(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, pairs: _Pairs, at: torch.Tensor,
                 out: Outcomes) -> None:
        """Pairs grouped by the one layer their fault edits (fx), or run whole with hooks."""
        n_f = len(edits)
        lo = torch.full((n_f,), -1, dtype=torch.int64).scatter_reduce_(
            0, edits.fault, edits.layer_ids, "amin", include_self=False)
        hi = torch.full((n_f,), -1, dtype=torch.int64).scatter_reduce_(
            0, edits.fault, edits.layer_ids, "amax", include_self=False)
        group = torch.where(lo == hi, lo, torch.full_like(lo, -1))[pairs.fault]
        for g in group.unique().tolist():
            pick = (group == g).nonzero().flatten()
            layer = edits.layer_names[g] if g >= 0 else None
            cut = self._cut(layer) if layer is not None else None
            if cut is not None:
                self._neurons_fx(x, y, edits, pairs.select(pick), at[pick], layer, cut, out)
            else:
                self._neurons_hooks(x, y, edits, pairs.select(pick), at[pick], out)

    def _edit_fn(self, edits: FaultEdits, e: torch.Tensor, rows: torch.Tensor, layer: str,
                 changed: torch.Tensor) -> Any:
        """``value -> edited value`` of one layer's output: edit ``e[i]`` hits row ``rows[i]``."""
        fmt = self._out_fmt[layer]
        bound = self._require_profile()[layer].out_max_abs if self.range_detector else None

        def apply(value: torch.Tensor) -> torch.Tensor:
            new, hit = edit_tensor(value, fmt, rows, edits.index[e], edits.op_codes[e], edits.mask[e], bound,
                                   edits.value_fn)
            changed[rows[hit.cpu()]] = True
            return new

        return apply

    def _prunable(self, kind: str, batch: int) -> bool:
        """Pruned replays need the golden value of every node, on the caller's own parameters."""
        if not self.prune or self._state(kind) is not None:
            return False
        estimate = 3 * 4 * batch * sum(s.n_neurons for s in self._require_profile().values())  # ~3 values a layer
        return estimate <= self.cache_bytes

    def _neurons_fx(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, pairs: _Pairs, at: torch.Tensor,
                    layer: str, cut: Any, out: Outcomes) -> None:
        split, batch = self._split, len(x)
        if split is None:
            raise RuntimeError("internal: the fx path was chosen for a model that was not split")
        prune = not cut.identity and self._prunable("neuron", batch)
        golden = self._golden(x, y, "neuron", split.value_nodes if prune else list(cut.live))
        values = [golden.values[n] for n in cut.live]
        scalars = any(not isinstance(v, torch.Tensor) for v in values[1:])
        replay = None
        if prune and not scalars:
            replay = self._replays.get(("neuron", layer))
            if replay is None:
                held = frozenset(self._out_fmt) if not self._identity else frozenset()
                replay = self._replays[("neuron", layer)] = PrunedReplay(split, cut, held)
        state = self._state("neuron")
        for part in self._chunks(len(pairs.fault), batch):
            used = part.stop - part.start
            rows = pairs.image[part]
            if scalars and used < batch:  # shapes read before the cut fix the batch size
                rows = torch.cat([rows, rows[:1].expand(batch - used)])
            inside = (pairs.pair >= part.start) & (pairs.pair < part.stop)
            changed = torch.zeros(len(rows), dtype=torch.bool)
            r = rows.to(x.device)
            start = self._edit_fn(edits, pairs.edit[inside], pairs.pair[inside] - part.start, layer, changed)(
                values[0].index_select(0, r))
            if cut.identity:
                logits = start
            elif replay is not None:
                self.replayed_pairs += used
                logits = golden.logits.index_select(0, r)
                faulty, alive = replay.run(start, r, golden.values)
                if len(alive):
                    logits[alive] = faulty.to(logits.dtype)
            else:
                live = [v.index_select(0, r) if _batched(v, batch) else v for v in values]
                live[0] = start
                logits = self._call(cut.suffix, state, *live)
            self._store(out, at[part], logits[:used], golden, y, pairs.image[part], changed[:used])
        self._note("neuron", [layer], "analytic" if cut.identity else "fx")

    def _neurons_hooks(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, pairs: _Pairs,
                       at: torch.Tensor, out: Outcomes) -> None:
        golden = self._golden(x, y, "neuron")
        state = self._state("neuron")
        for part in self._chunks(len(pairs.fault), len(x)):
            inside = (pairs.pair >= part.start) & (pairs.pair < part.stop)
            e, r = pairs.edit[inside], pairs.pair[inside] - part.start
            changed = torch.zeros(part.stop - part.start, dtype=torch.bool)
            handles = []
            try:
                for lid in edits.layer_ids[e].unique().tolist():
                    pick = edits.layer_ids[e] == lid
                    fn = self._edit_fn(edits, e[pick], r[pick], edits.layer_names[lid], changed)
                    handles.append(self._modules[edits.layer_names[lid]].register_forward_hook(
                        lambda m, a, o, fn=fn: fn(o)))
                logits = self._call(self.model, state, x.index_select(0, pairs.image[part].to(x.device)))
            finally:
                for handle in handles:
                    handle.remove()
            self._store(out, at[part], logits, golden, y, pairs.image[part], changed)
        self._note("neuron", [edits.layer_names[i] for i in edits.layer_ids[pairs.edit].unique().tolist()], "hooks")

    # weight faults ----------------------------------------------------------------------------
    def _weights(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, fault: torch.Tensor,
                 image: torch.Tensor, at: torch.Tensor, out: Outcomes) -> None:
        """Faults of one element edit by the delta method, the others (and every fault in a layer
        whose weights the model reuses) with edited weights."""
        if bool((edits.sample[edits.kind_codes == WEIGHT] >= 0).any()):
            raise ValueError("weight faults are permanent: their edits meet every input (sample -1)")
        counts = torch.bincount(edits.fault, minlength=len(edits))
        reused = torch.tensor([weights_reused(self._modules[n]) for n in edits.layer_names], dtype=torch.bool)
        single = ((counts[edits.fault] == 1) & (edits.op_codes != META) & (edits.kind_codes == WEIGHT)
                  & ~reused[edits.layer_ids])  # reused weights: the whole model, with the edited weights
        one = torch.full((len(edits),), -1, dtype=torch.int64)
        one[edits.fault[single]] = single.nonzero().flatten()
        edit_of_pair = one[fault]  # each pair's one edit, or -1
        layer_of_fault = torch.full((len(edits),), -1, dtype=torch.int64)
        layer_of_fault[edits.fault[single]] = edits.layer_ids[single]
        layers = edits.layer_ids[single].unique().tolist()  # a few layers: no sort over the pairs
        if len(layers) == 1 and bool((layer_of_fault == layers[0]).all()):  # every fault, so every pair
            mine = single.nonzero().flatten()
            self._weights_delta(x, y, edits, mine, edit_of_pair, image, at, edits.layer_names[layers[0]], out)
            return
        layer_of_pair = layer_of_fault[fault]
        for lid in layers:
            mine = (single & (edits.layer_ids == lid)).nonzero().flatten()
            pick = (layer_of_pair == lid).nonzero().flatten()
            if len(pick):
                self._weights_delta(x, y, edits, mine, edit_of_pair[pick], image[pick], at[pick],
                                    edits.layer_names[lid], out)
        many = (layer_of_pair < 0).nonzero().flatten()
        if len(many):
            self._weights_full(x, y, edits, join_pairs(edits, fault[many], image[many]), at[many], out)

    def _weights_delta(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, mine: torch.Tensor,
                       e: torch.Tensor, rows: torch.Tensor, at: torch.Tensor, layer: str, out: Outcomes) -> None:
        """Pair p: edit ``e[p]`` (its fault's one element, among the layer's edits ``mine``) on
        image ``rows[p]``; each edit's new value is computed once."""
        module = self._modules[layer]
        weight = self._held_weight(layer)
        value, hit = edited_elements(weight, self._w_fmt[layer], edits.index[mine].to(weight.device),
                                     edits.op_codes[mine], edits.mask[mine], edits.value_fn)
        position = torch.full((edits.n_edits,), -1, dtype=torch.int64)
        position[mine] = torch.arange(len(mine))
        k = position[e]
        index = edits.index[mine][k].to(weight.device)
        value = value[k.to(value.device)]
        changed = hit.cpu()[k]
        cut = self._cut(layer)
        if cut is not None and cut.layer_input is not None and supports_delta(module):
            if cut.identity and isinstance(module, nn.Linear):
                self._weights_analytic(x, y, layer, cut, weight, index, value, rows, at, changed, out)
                return
            self._weights_fx(x, y, layer, cut, weight, index, value, rows, at, changed, out)
            return
        golden = self._golden(x, y, "weight")
        params = self._layer_params(layer)
        for part in self._chunks(len(rows), len(x)):
            k, v = index[part], value[part]
            busy: list[bool] = []

            def hook(mod: nn.Module, args: Any, o: torch.Tensor, k=k, v=v) -> Any:
                if busy:  # the fault itself re-runs the layer (weight faults outside Conv/Linear)
                    return None
                busy.append(True)
                try:
                    return apply_weight_faults(module, weight, args[0], o, k, v, params)
                finally:
                    busy.clear()

            handle = module.register_forward_hook(hook)
            try:
                logits = self._call(self.model, self._state("weight"), x.index_select(0, rows[part].to(x.device)))
            finally:
                handle.remove()
            self._store(out, at[part], logits, golden, y, rows[part], changed[part])
        self._note("weight", [layer], "hooks")

    def _weights_fx(self, x: torch.Tensor, y: torch.Tensor, layer: str, cut: Any, weight: torch.Tensor,
                    index: torch.Tensor, value: torch.Tensor, rows: torch.Tensor, at: torch.Tensor,
                    changed: torch.Tensor, out: Outcomes) -> None:
        batch = len(x)
        module = self._modules[layer]
        golden = self._golden(x, y, "weight", [*cut.live, cut.layer_input])
        values = [golden.values[n] for n in cut.live]
        inp = golden.values[cut.layer_input]
        scalars = any(not isinstance(v, torch.Tensor) for v in values[1:])
        params = self._layer_params(layer)
        state = self._state("weight")
        for part in self._chunks(len(rows), batch):
            used = part.stop - part.start
            r, k, v = rows[part], index[part], value[part]
            if scalars and used < batch:  # shapes read before the cut fix the batch size
                r, k, v = (torch.cat([t, t[:1].expand(batch - used)]) for t in (r, k, v))
            r = r.to(x.device)
            live = [t.index_select(0, r) if _batched(t, batch) else t for t in values]
            live[0] = apply_weight_faults(module, weight, inp.index_select(0, r), live[0], k, v, params)
            logits = live[0] if cut.identity else self._call(cut.suffix, state, *live)
            self._store(out, at[part], logits[:used], golden, y, rows[part], changed[part])
        self._note("weight", [layer], "delta")

    def _weights_analytic(self, x: torch.Tensor, y: torch.Tensor, layer: str, cut: Any, weight: torch.Tensor,
                          index: torch.Tensor, value: torch.Tensor, rows: torch.Tensor, at: torch.Tensor,
                          changed: torch.Tensor, out: Outcomes) -> None:
        """The last Linear layer needs no network: a fault changes one logit of its image,
        ``z = g_o + Δw_oj × feature_j``. With float32 logits everything else about the faulty row
        comes from per-(image, class) tables of the golden logits (the log-sum-exp and the best
        logit of the other classes), so a pair costs O(1); float64 logits (exactness checks) are
        rebuilt row by row and scored as cross-entropy does."""
        golden = self._golden(x, y, "weight", [cut.live[0], cut.layer_input])
        feat = golden.values[cut.layer_input]
        delta = value - weight.reshape(-1)[index]
        fan_in = weight.shape[1]
        g = golden.logits
        n_x, n_c = g.shape
        if g.dtype == torch.float64:
            size = max(1, (1 << 24) // n_c)
            for start in range(0, len(rows), size):
                part = slice(start, start + size)
                n = rows[part].to(feat.device)
                o, j = index[part] // fan_in, index[part] % fan_in
                logits = g.index_select(0, n)
                pick = torch.arange(len(n), device=n.device)
                logits[pick, o] = logits[pick, o] + delta[part] * feat[n, j]
                self._store(out, at[part], logits, golden, y, rows[part], changed[part])
            self._note("weight", [layer], "analytic")
            return
        g = g.float()
        others = g.unsqueeze(1).expand(n_x, n_c, n_c).clone()  # [image, o, class]
        others.masked_fill_(torch.eye(n_c, dtype=torch.bool, device=g.device), float("-inf"))
        lse_wo = torch.logsumexp(others, dim=2).reshape(-1)  # [image * o]
        best_val, best_idx = (t.reshape(-1) for t in others.max(dim=2))  # first index among ties, as argmax
        g_flat = g.reshape(-1)
        g_label = g.gather(1, y[:, None])[:, 0]
        feat_flat = feat.float().reshape(-1)
        grid = _grid(rows, index, n_x)
        if grid is not None:  # faults x the same images in order: gather whole rows, [o, image] tables
            faults = grid
            o, j, d = index[faults] // fan_in, index[faults] % fan_in, delta[faults].float()
            z = g.T.contiguous().index_select(0, o) + d[:, None] * feat.float().T.contiguous().index_select(0, j)
            lse = lse_wo.view(n_x, n_c).T.contiguous().index_select(0, o)
            own = o[:, None] == y[None, :]
            loss = torch.logaddexp(lse, z) - torch.where(own, z, g_label[None, :])
            bv = best_val.view(n_x, n_c).T.contiguous().index_select(0, o)
            bi = best_idx.view(n_x, n_c).T.contiguous().index_select(0, o)
            wins = (z > bv) | ((z == bv) & (o[:, None] < bi)) | torch.isnan(z)
            _put(out.faulty_pred, at, torch.where(wins, o[:, None], bi).reshape(-1))
            _put(out.faulty_loss, at, loss.reshape(-1))
            _put(out.delta_loss, at, (loss - golden.loss[None, :]).abs().reshape(-1))
            _put(out.nonfinite, at, (~torch.isfinite(z)).reshape(-1))
            _put(out.masked, at, (~changed[faults.cpu()])[:, None].expand(len(faults), n_x).reshape(-1))
            self._note("weight", [layer], "analytic")
            return
        size = 1 << 22
        for start in range(0, len(rows), size):
            part = slice(start, start + size)
            n = rows[part].to(g.device)
            o, j = index[part] // fan_in, index[part] % fan_in
            at_o = n * n_c + o
            z = g_flat[at_o] + delta[part].float() * feat_flat[n * fan_in + j]
            loss = torch.logaddexp(lse_wo[at_o], z) - torch.where(o == y[n], z, g_label[n])
            bv, bi = best_val[at_o], best_idx[at_o]
            wins = (z > bv) | ((z == bv) & (o < bi)) | torch.isnan(z)  # argmax takes the first max, NaN first
            p = at[part]
            out.faulty_pred[p] = torch.where(wins, o, bi).cpu()
            out.faulty_loss[p] = loss.cpu()
            out.delta_loss[p] = (loss - golden.loss[n]).abs().cpu()
            out.nonfinite[p] = (~torch.isfinite(z)).cpu()
            out.masked[p] = ~changed[part]
        self._note("weight", [layer], "analytic")

    def _scratch_weight(self, layer: str) -> torch.Tensor:
        """A private copy of the layer's held weight, made once: edits go into it in place and
        are undone after the pass, so a fault of many edits never copies whole weights."""
        held = self._held_weight(layer)
        source, copy = self._scratch.get(layer, (None, None))
        if source is not held or copy is None:
            copy = held.clone()
            self._scratch[layer] = (held, copy)
        return copy

    def _weights_full(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, pairs: _Pairs, at: torch.Tensor,
                      out: Outcomes) -> None:
        """Faults of many weight edits, or in reused weights: the edited weights, one pass over
        each fault's images."""
        golden = self._golden(x, y, "weight")
        layers = set()
        for f in pairs.fault.unique().tolist():
            mine = (pairs.fault == f).nonzero().flatten()
            e = edits.edits_of(f)
            state = dict(self._state("weight") or {})
            changed = False
            undo: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
            try:
                for lid in edits.layer_ids[e].unique().tolist():
                    name = edits.layer_names[lid]
                    layers.add(name)
                    sel = e[edits.layer_ids[e] == lid]
                    if bool((edits.op_codes[sel] == META).any()):  # the whole tensor depends on it
                        weight = self._held_weight(name)
                        new, hit = edit_tensor(weight.unsqueeze(0), self._w_fmt[name], torch.zeros_like(sel),
                                               edits.index[sel], edits.op_codes[sel], edits.mask[sel],
                                               value_fn=edits.value_fn)
                        state[f"{name}.weight"] = new[0]
                    else:
                        scratch = self._scratch_weight(name)
                        device = scratch.device
                        keys, _, values, hit = edit_sparse(scratch, self._w_fmt[name], edits.index[sel].to(device),
                                                           edits.op_codes[sel].to(device), edits.mask[sel].to(device),
                                                           value_fn=edits.value_fn)
                        flat = scratch.view(-1)
                        undo.append((flat, keys, flat[keys].clone()))
                        flat[keys] = values.to(flat.dtype)
                        state[f"{name}.weight"] = scratch
                    changed = changed or bool(hit.any())
                for part in self._chunks(len(mine), len(x)):
                    rows = pairs.image[mine[part]]
                    logits = self._call(self.model, state, x.index_select(0, rows.to(x.device)))
                    self._store(out, at[mine[part]], logits, golden, y, rows, torch.full((len(rows),), changed))
            finally:
                for flat, keys, old in undo:
                    flat[keys] = old
        self._note("weight", sorted(layers), "weights")


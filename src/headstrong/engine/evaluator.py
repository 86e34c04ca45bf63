"""``FaultEvaluator``: the fast campaign core.

Speed comes from four places (DESIGN.md, "Where the speed comes from"):

* one fault per sample: a batch of B images carries B independent faults in one pass;
* upstream reuse: the golden values live across the faulty layer are computed once per batch
  (torch.fx split) and only the rest of the network runs again; models that do not trace fall
  back to a full forward pass with a hook (``last_path == "hooks"``);
* weight faults by the delta method: ``Δw × input patch`` added to one output channel, from the
  cached layer input (``"delta"``); the last Linear layer needs no network at all
  (``"analytic"``), and ``evaluate_all_pairs`` evaluates every (fault, image) pair there;
* bit flips as integer XORs in ``headstrong.formats``, on the device.
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
from headstrong.engine.inject import as_faultset, check_profiled, hold_hooks
from headstrong.engine.layers import (
    LayerStats,
    check_input,
    check_model,
    eval_mode,
    profile_layers,
    resolve_layers,
)
from headstrong.engine.sites import (
    apply_weight_faults,
    flip_neurons,
    flipped_weights,
    is_identity_format,
    layer_format,
    supports_delta,
)
from headstrong.engine.split import PrunedReplay, SplitModel
from headstrong.faults import KINDS, FaultSet

SPLITS = ("auto", "fx", "hooks")
OUTPUT_KEYS = ("golden_pred", "faulty_pred", "golden_loss", "faulty_loss", "delta_loss", "top2_diff", "nonfinite")


@dataclass
class _Golden:
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    pred: torch.Tensor
    top2: torch.Tensor
    values: dict[Any, Any] = field(default_factory=dict)
    nbytes: int = 0


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """``(p1 - p2) * 100`` of ``softmax(logits)``: the golden model's margin per sample."""
    probs = torch.softmax(logits.float(), dim=1)
    if probs.shape[1] < 2:
        return torch.full((len(probs),), 100.0, device=probs.device)
    top = probs.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) * 100


class FaultEvaluator:
    """Golden and faulty outcomes of batches of faults, one fault per sample.

    ``fmt``: the number format the targeted tensors are held in; ``range_detector``: clamp
    flipped activations to each layer's profiled max |x| (neuron faults); ``layers``: extra
    modules to profile and hold besides the injectable ones; ``split``: ``"auto"`` (fx when the
    model traces), ``"fx"`` (error if it does not) or ``"hooks"``; ``chunk_size``: faults per
    forward pass (default: the batch size); ``prune``: on the fx path, cache every golden value
    of the batch (when that fits in ``cache_bytes``) and drop a fault from the replay as soon as
    it has been masked (all values still needed equal the golden ones), which leaves results
    unchanged and skips about half the work for typical CNNs; ``channels_last``: run 4-D
    images in channels-last memory format (default: on the CPU, where convolutions run faster
    so; results equal to rounding).
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
    ) -> None:
        check_model(model)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.model = model
        self.fmt = formats.get(fmt)
        self.range_detector = bool(range_detector)
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.prune = bool(prune)
        self.channels_last = (torch.device(device).type == "cpu") if channels_last is None else bool(channels_last)
        self.cache_bytes = int(cache_bytes)
        self._replays: dict[tuple[str, str], PrunedReplay] = {}
        self.layers = resolve_layers(model, layers)
        self._modules = dict(model.named_modules())
        self._identity = is_identity_format(self.fmt)
        self._stats: dict[str, LayerStats] | None = None
        self._never_ran: set[str] = set()
        self._golden_cache: dict[str, list[_Golden]] = {}
        self._keys: dict[int, set[str]] = {}
        self.last_path: str | None = None
        self.paths: dict[tuple[str, str], str] = {}  # (kind, layer) -> the path that ran last
        self.split_error: str | None = None
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
        self._weight_state: dict[str, torch.Tensor] | None = None

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

    # profiling ------------------------------------------------------------------------------
    def profile(self, batches: Iterable[Any]) -> Any:
        """Learn each layer's shapes and max |x| (output and weight) over ``batches``.

        The maxima bound the range detector and scale integer formats; they are per layer over
        all the data, so results never depend on batching. Returns ``layer_info``.
        """

        def images() -> Iterator[torch.Tensor]:
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                yield check_input(x).to(self.device)

        state = self._base
        with torch.no_grad():
            stats = profile_layers(self.model, images(), self.layers,
                                   forward=lambda x: self._call(self.model, state, x))
        missing = [n for n in self.layers if stats[n].calls == 0]
        explicit = [n for n in missing if not isinstance(self._modules[n], _injectable_types())]
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

    def _golden(self, x: torch.Tensor, y: torch.Tensor, kind: str, wanted: Sequence[Any] = ()) -> _Golden:
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
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(x):
            raise ValueError("the model must return logits of shape [N, num_classes]")
        if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
            raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1} for {logits.shape[1]} classes")
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        entry = _Golden(x, y, logits, loss, logits.argmax(1), top2_margin(logits), values)
        entry.nbytes = sum(v.nbytes for v in values.values() if isinstance(v, torch.Tensor)) + x.nbytes
        entries.insert(0, entry)
        total = 0
        for i, old in enumerate(entries):
            total += old.nbytes
            if i and total > self.cache_bytes:
                del entries[i:]
                break
        return entry

    def golden(self, x: torch.Tensor, y: Any, kind: str = "neuron") -> dict[str, torch.Tensor]:
        """The golden run on ``x`` (cached per batch): logits, prediction, loss, top-2 margin."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        self._require_profile()
        x, y = self._check_xy(x, y)
        with self._session(kind):
            g = self._golden(x, y, kind)
        return {"logits": g.logits.cpu(), "golden_pred": g.pred.cpu(), "golden_loss": g.loss.cpu(),
                "top2_diff": g.top2.cpu()}

    # evaluation -----------------------------------------------------------------------------
    def _validate(self, faults: FaultSet) -> None:
        stats = self._require_profile()
        for name in faults.layer_names:
            if name not in stats:
                if name in self._never_ran:
                    raise ValueError(f"layer {name!r} never runs in the model's forward pass")
                if name in self._modules and name:
                    raise ValueError(
                        f"layer {name!r} was not profiled; pass layers=[{name!r}] to FaultEvaluator "
                        "to target it (profiled layers: injectable ones)"
                    )
        faults.validate(self.model)
        check_profiled(faults, self.model, stats, self.fmt.bits)

    def _rows(self, faults: FaultSet, n: int) -> torch.Tensor:
        sample = faults.sample
        if faults.has_sample:
            if int(sample.max()) >= n:
                raise ValueError(f"fault sample {int(sample.max())} out of range for a batch of {n} images")
            return sample
        if bool((sample >= 0).any()):
            raise ValueError("either every fault names its sample or none does (then faults[i] meets x[i])")
        if len(faults) != n:
            raise ValueError(
                f"{len(faults)} faults for {n} images: without a sample column, faults[i] applies to "
                "x[i], so give one fault per image (or set each fault's sample)"
            )
        return torch.arange(n)

    def evaluate(self, x: torch.Tensor, y: Any, faults: FaultSet | Iterable[Any]) -> dict[str, torch.Tensor]:
        """Outcomes per fault: ``faults[i]`` applied to ``x[i]`` alone (or to ``x[faults.sample[i]]``).

        Returns 1-D CPU tensors: golden_pred, faulty_pred (int64), golden_loss, faulty_loss,
        delta_loss, top2_diff (float32) and nonfinite (bool).
        """
        faults = as_faultset(faults)
        x, y = self._check_xy(x, y)
        self._validate(faults)
        rows = self._rows(faults, len(x)).to(self.device)
        n = len(faults)
        out = {k: torch.empty(n, dtype=torch.int64) for k in ("golden_pred", "faulty_pred")}
        out.update({k: torch.empty(n) for k in ("golden_loss", "faulty_loss", "delta_loss", "top2_diff")})
        out["nonfinite"] = torch.empty(n, dtype=torch.bool)
        groups = torch.stack([faults.kind_codes.long(), faults.layer_ids], 1)
        for code, lid in torch.unique(groups, dim=0).tolist():
            sel = ((groups[:, 0] == code) & (groups[:, 1] == lid)).nonzero().flatten()
            kind, layer = KINDS[code], faults.layer_names[lid]
            index = faults.index[sel].to(self.device)
            bit = faults.bit[sel].to(self.device)
            with self._session(kind):
                logits, golden, path = self._faulty(x, y, kind, layer, rows[sel.to(self.device)], index, bit)
            self.paths[(kind, layer)] = path
            self.last_path = path
            r = rows[sel.to(self.device)]
            result = _outcomes(logits, golden, r, y)
            for key, value in result.items():
                out[key][sel] = value.cpu()
        return out

    def _faulty(self, x: torch.Tensor, y: torch.Tensor, kind: str, layer: str, rows: torch.Tensor,
                index: torch.Tensor, bit: torch.Tensor) -> tuple[torch.Tensor, _Golden, str]:
        split = self._split
        module = self._modules[layer]
        if split is not None and split.can_split(layer):
            cut = split.cut(layer)
            if kind == "neuron" or cut.layer_input is not None:
                return self._faulty_fx(x, y, kind, layer, cut, rows, index, bit)
        return self._faulty_hooks(x, y, kind, layer, module, rows, index, bit)

    def _chunks(self, n: int, batch: int) -> Iterator[slice]:
        size = self.chunk_size or batch
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    def _fault_fn(self, kind: str, layer: str) -> Any:
        """``f(out, inp, index, bit) -> faulty out`` for one layer."""
        stats = self._require_profile()[layer]
        if kind == "neuron":
            fmt = self._out_fmt[layer]
            bound = stats.out_max_abs if self.range_detector else None
            return lambda out, inp, index, bit: flip_neurons(out, index, bit, fmt, bound)
        module = self._modules[layer]
        state = self._state("weight") or {}
        weight = state.get(f"{layer}.weight")
        if weight is None:
            weight = module.weight.detach()
        fmt = self._w_fmt[layer]
        params = {k: state.get(f"{layer}.{k}", v.detach()) for k, v in
                  [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
                  if k != "weight"}

        def apply(out: torch.Tensor, inp: torch.Tensor, index: torch.Tensor, bit: torch.Tensor) -> torch.Tensor:
            value = flipped_weights(weight, index, bit, fmt)
            return apply_weight_faults(module, weight, inp, out, index, value, params)

        return apply

    def _prunable(self, kind: str, batch: int) -> bool:
        """Pruned replays need the golden value of every node, on the caller's own parameters."""
        if not self.prune or self._state(kind) is not None:
            return False
        stats = self._require_profile()
        estimate = 3 * 4 * batch * sum(s.n_neurons for s in stats.values())  # ~3 values per layer, fp32
        return estimate <= self.cache_bytes

    def _faulty_fx(self, x: torch.Tensor, y: torch.Tensor, kind: str, layer: str, cut: Any,
                   rows: torch.Tensor, index: torch.Tensor, bit: torch.Tensor) -> tuple[torch.Tensor, _Golden, str]:
        split = self._split
        if split is None:
            raise RuntimeError("internal: the fx path was chosen for a model that was not split")
        batch = len(x)
        prune = not cut.identity and self._prunable(kind, batch)
        if prune:
            wanted = split.value_nodes
        else:
            wanted = list(cut.live) + ([cut.layer_input] if kind == "weight" else [])
        golden = self._golden(x, y, kind, wanted)
        values = [golden.values[n] for n in cut.live]
        inp = golden.values[cut.layer_input] if kind == "weight" else None
        scalars = any(not isinstance(v, torch.Tensor) for v in values[1:])
        prune = prune and not scalars
        replay = None
        if prune:
            replay = self._replays.get((kind, layer))
            if replay is None:
                held = frozenset(self._out_fmt) if kind == "neuron" and not self._identity else frozenset()
                replay = self._replays[(kind, layer)] = PrunedReplay(split, cut, held)
        fault = self._fault_fn(kind, layer)
        state = self._state(kind)
        pieces = []
        for part in self._chunks(len(rows), batch):
            r, k, b = rows[part], index[part], bit[part]
            used = len(r)
            if scalars and used < batch:  # shapes read before the cut fix the batch size
                pad = batch - used
                r, k, b = (torch.cat([t, t[:1].expand(pad)]) for t in (r, k, b))
            start = fault(values[0].index_select(0, r), None if inp is None else inp.index_select(0, r), k, b)
            if cut.identity:
                logits = start
            elif replay is not None:
                logits = golden.logits.index_select(0, r)
                out, alive = replay.run(start, r, golden.values)
                if len(alive):
                    logits[alive] = out.to(logits.dtype)
            else:
                live = [v.index_select(0, r) if _batched(v, batch) else v for v in values]
                live[0] = start
                logits = self._call(cut.suffix, state, *live)
            pieces.append(logits[:used])
        module = self._modules[layer]
        if cut.identity:
            path = "analytic"
        elif kind == "weight" and supports_delta(module):
            path = "delta"
        else:
            path = "fx"
        return torch.cat(pieces), golden, path

    def _faulty_hooks(self, x: torch.Tensor, y: torch.Tensor, kind: str, layer: str, module: nn.Module,
                      rows: torch.Tensor, index: torch.Tensor, bit: torch.Tensor) -> tuple[torch.Tensor, _Golden, str]:
        golden = self._golden(x, y, kind)
        fault = self._fault_fn(kind, layer)
        state = self._state(kind)
        pieces = []
        busy: list[bool] = []
        for part in self._chunks(len(rows), len(x)):
            r, k, b = rows[part], index[part], bit[part]

            def hook(mod: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor | None:
                if busy:  # the fault itself re-runs the layer (weight faults outside Conv/Linear)
                    return None
                busy.append(True)
                try:
                    return fault(out, args[0] if args else None, k, b)
                finally:
                    busy.clear()

            handle = module.register_forward_hook(hook)
            try:
                pieces.append(self._call(self.model, state, x.index_select(0, r)))
            finally:
                handle.remove()
        return torch.cat(pieces), golden, "hooks"

    def evaluate_all_pairs(self, x: torch.Tensor, y: Any, faults: FaultSet | Iterable[Any]) -> dict[str, torch.Tensor]:
        """Outcomes of every fault on every image: 2-D CPU tensors ``[len(faults), len(x)]``.

        Weight faults in the last Linear layer go analytically (``Δlogit_i = feature_j × Δw_ij``)
        in chunks of faults; anything else runs ``evaluate`` on each fault repeated per image.
        The golden columns are read-only expanded views (the same row for every fault).
        """
        faults = as_faultset(faults)
        x, y = self._check_xy(x, y)
        self._validate(faults)
        n_f, n_x = len(faults), len(x)
        split = self._split
        if (n_f and len(faults.layer_names) == 1 and bool((faults.kind_codes == 1).all()) and split is not None
                and split.can_split(faults.layer_names[0])):
            layer = faults.layer_names[0]
            cut = split.cut(layer)
            if cut.identity and isinstance(self._modules[layer], nn.Linear) and cut.layer_input is not None:
                with self._session("weight"):
                    return self._all_pairs_analytic(x, y, layer, cut, faults)
        reps = FaultSet.concat([faults[i : i + 1].with_sample([0]) for i in range(n_f)]) if n_f else faults
        flat = reps[torch.arange(n_f).repeat_interleave(n_x)].with_sample(torch.arange(n_x).repeat(n_f))
        result = self.evaluate(x, y, flat)
        return {k: v.view(n_f, n_x) for k, v in result.items()}

    def _all_pairs_analytic(self, x: torch.Tensor, y: torch.Tensor, layer: str, cut: Any,
                            faults: FaultSet) -> dict[str, torch.Tensor]:
        golden = self._golden(x, y, "weight", [cut.live[0], cut.layer_input])
        feat = golden.values[cut.layer_input]
        logits = golden.logits
        weight = (self._state("weight") or {}).get(f"{layer}.weight")
        if weight is None:
            weight = self._modules[layer].weight.detach()
        index = faults.index.to(self.device)
        value = flipped_weights(weight, index, faults.bit.to(self.device), self._w_fmt[layer])
        delta = value - weight.reshape(-1)[index]
        fan_in = weight.shape[1]
        o_all, j_all = index // fan_in, index % fan_in
        n_x, n_c = logits.shape
        # A fault changes one logit column o: z = g_o + Δw feat_j. Everything else about the
        # faulty row is known from the golden logits: per (image, class o), the log-sum-exp and
        # the best logit of the other classes. So each (fault, image) pair costs O(1).
        g = logits.float()
        others = g.unsqueeze(1).expand(n_x, n_c, n_c).clone()  # [image, o, class]
        eye = torch.eye(n_c, dtype=torch.bool, device=g.device)
        others.masked_fill_(eye, float("-inf"))
        # tables indexed by class first, so each fault's row is one contiguous gather
        lse_wo = torch.logsumexp(others, dim=2).T.contiguous()  # [o, image]
        best_val, best_idx = others.max(dim=2)  # first index among ties, as argmax
        best_val, best_idx = best_val.T.contiguous(), best_idx.T.contiguous()
        g_label = g.gather(1, y[:, None])[:, 0]
        g_t = g.T.contiguous()
        feat_t = feat.float().T.contiguous()  # [feature, image]
        golden_bad = ~torch.isfinite(g).all(1)
        size = max(1, (1 << 24) // max(1, n_x))
        keys = ("faulty_pred", "faulty_loss", "delta_loss", "nonfinite")
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for start in range(0, len(faults), size):
            o, j, d = o_all[start:start + size], j_all[start:start + size], delta[start:start + size]
            z = g_t.index_select(0, o) + d[:, None].float() * feat_t.index_select(0, j)  # [fault, image]
            lse = torch.logaddexp(lse_wo.index_select(0, o), z)
            own = o[:, None] == y[None, :]
            loss = lse - torch.where(own, z, g_label[None, :])
            bv, bi = best_val.index_select(0, o), best_idx.index_select(0, o)
            o_col = o[:, None]
            wins = (z > bv) | ((z == bv) & (o_col < bi)) | torch.isnan(z)  # argmax takes the first max, NaN first
            pred = torch.where(wins, o_col, bi)
            parts["faulty_pred"].append(pred)
            parts["faulty_loss"].append(loss)
            parts["delta_loss"].append((loss - golden.loss[None, :]).abs())
            parts["nonfinite"].append(~torch.isfinite(z) | golden_bad[None, :])
        self.last_path = "analytic"
        self.paths[("weight", layer)] = "analytic"
        n_f = len(faults)
        result = {k: (v[0] if len(v) == 1 else torch.cat(v)).cpu() for k, v in parts.items()}
        # golden columns repeat per fault: expanded views, no copies
        result["golden_pred"] = golden.pred.cpu().expand(n_f, n_x)
        result["golden_loss"] = golden.loss.cpu().expand(n_f, n_x)
        result["top2_diff"] = golden.top2.cpu().expand(n_f, n_x)
        return result


def _batched(value: Any, batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch


def _outcomes(logits: torch.Tensor, golden: _Golden, rows: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    labels = y.index_select(0, rows)
    g_loss = golden.loss.index_select(0, rows)
    f_loss = F.cross_entropy(logits.float(), labels, reduction="none")
    return {
        "golden_pred": golden.pred.index_select(0, rows),
        "faulty_pred": logits.argmax(1),
        "golden_loss": g_loss,
        "faulty_loss": f_loss,
        "delta_loss": (f_loss - g_loss).abs(),
        "top2_diff": golden.top2.index_select(0, rows),
        "nonfinite": ~torch.isfinite(logits).all(1),
    }


def _injectable_types() -> tuple[type, ...]:
    from headstrong.engine.layers import INJECTABLE_TYPES

    return INJECTABLE_TYPES

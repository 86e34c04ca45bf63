"""Batched fault-model outcomes for campaigns and benchmarks, on top of ``FaultEvaluator``.

``EditEvaluator`` evaluates many (fault, image) pairs per forward pass with the engine's fast
paths (the golden values before a faulty layer reused, weight faults of one element by the delta
method); ``FaultModelEvaluator`` turns the sites a campaign plans into a fault model's faults.
Both apply edits with ``headstrong.engine.edits``, as the exact ``inject_edits`` does, and are
tested against it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from headstrong.engine.edits import META, NEURON, WEIGHT, _edit_sparse, edit_tensor, edited_elements
from headstrong.engine.sites import apply_weight_faults, supports_delta
from headstrong.faults.faultset import KINDS, FaultSet
from headstrong.faults.models import FaultEdits, get_fault_model


class EditEvaluator:
    """Batched outcomes of fault-model faults on top of a profiled ``FaultEvaluator``: its
    formats, profiles, golden cache and model split are reused, so the conventions are the same.

    ``evaluate_all_pairs(x, y, edits)`` gives 2-D ``[len(edits), len(x)]`` outcomes (the keys
    of ``FaultEvaluator.evaluate`` plus ``masked``), ``evaluate(x, y, edits)`` 1-D ones with
    fault i on image i. Paths: neuron faults within one layer run
    only the network after it from cached golden values (``"fx"``), others a full pass with
    hooks (``"hooks"``); weight faults of one element add ``Δw × input`` (``"delta"``), weight
    faults of many elements (bit errors, metadata, several sites) run the network once per
    fault over all images with the edited weights (``"weights"``).
    """

    def __init__(self, evaluator: Any) -> None:
        self.ev = evaluator
        self.paths: dict[str, int] = {}
        self._diagonal = False
        self._scratch: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _count(self, path: str, pairs: int) -> None:
        self.paths[path] = self.paths.get(path, 0) + pairs

    def evaluate(self, x: torch.Tensor, y: Any, edits: FaultEdits) -> dict[str, torch.Tensor]:
        """Outcomes per fault, 1-D: fault i applied to ``x[i]`` alone (its edits' sample is -1
        or 0, the fault's own inference), as ``FaultEvaluator.evaluate`` does for flips."""
        if len(edits) != len(x):
            raise ValueError(f"{len(edits)} faults for {len(x)} images: fault i meets x[i], give one per image")
        if bool((edits.sample > 0).any()):
            raise ValueError("in evaluate, fault i meets x[i] alone: edit samples must be -1 or 0")
        out = self._run(x, y, edits, diagonal=True)
        return {k: v[:, 0] for k, v in out.items()}

    def evaluate_all_pairs(self, x: torch.Tensor, y: Any, edits: FaultEdits) -> dict[str, torch.Tensor]:
        """Outcomes of every fault on every image, 2-D ``[len(edits), len(x)]``; an edit with a
        sample meets that image only (activations resampled per inference)."""
        return self._run(x, y, edits, diagonal=False)

    def _col(self, pn: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(pn) if self._diagonal else pn

    def _run(self, x: torch.Tensor, y: Any, edits: FaultEdits, diagonal: bool) -> dict[str, torch.Tensor]:
        self._diagonal = diagonal
        ev = self.ev
        stats = ev._require_profile()
        x, y = ev._check_xy(x, y)
        unknown = [n for n in edits.layer_names if n not in stats]
        if unknown:
            raise ValueError(f"layer {unknown[0]!r} was not profiled; profiled layers: {', '.join(list(stats)[:10])} ...")
        edits.validate(ev.model, ev.fmt, {n: s.output_shape for n, s in stats.items()})
        n_f, n_x = len(edits), len(x)
        if bool((edits.sample >= n_x).any()):
            raise ValueError(f"edit sample {int(edits.sample.max())} out of range for {n_x} inputs")
        cols = 1 if diagonal else n_x
        out = {k: torch.zeros(n_f, cols, dtype=torch.int64) for k in ("golden_pred", "faulty_pred")}
        out.update({k: torch.zeros(n_f, cols) for k in ("golden_loss", "faulty_loss", "delta_loss", "top2_diff")})
        out["nonfinite"] = torch.zeros(n_f, cols, dtype=torch.bool)
        out["masked"] = torch.ones(n_f, cols, dtype=torch.bool)
        kinds = torch.full((n_f,), -1, dtype=torch.int64)
        kinds.scatter_reduce_(0, edits.fault, edits.kind_codes, "amax", include_self=False)
        mixed = torch.full((n_f,), -1, dtype=torch.int64)
        mixed.scatter_reduce_(0, edits.fault, edits.kind_codes, "amin", include_self=False)
        if bool(((kinds != mixed) & (kinds >= 0)).any()):
            raise ValueError("a fault mixes neuron and weight edits; campaigns take one kind per fault (inject takes both)")
        empty = kinds < 0
        kinds[empty] = KINDS.index(edits.base_kind)
        for code in (NEURON, WEIGHT):
            faults = (kinds == code).nonzero().flatten()
            if not len(faults):
                continue
            kind = KINDS[code]
            with ev._session(kind):
                golden = ev._golden(x, y, kind)

                def per_fault(value: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
                    value = value.cpu()
                    return value[rows][:, None] if diagonal else value.expand(len(rows), n_x)

                for key, value in (("golden_pred", golden.pred), ("golden_loss", golden.loss), ("top2_diff", golden.top2)):
                    out[key][faults] = per_fault(value, faults)
                # faults without an edit are golden runs, and masked
                none = faults[empty[faults]]
                out["faulty_pred"][none] = per_fault(golden.pred, none)
                out["faulty_loss"][none] = per_fault(golden.loss, none)
                out["nonfinite"][none] = per_fault(~torch.isfinite(golden.logits).all(1), none)
                self._count("golden", len(none) * cols)
                busy = faults[~empty[faults]]
                if code == NEURON:
                    self._neurons(x, y, edits, busy, out)
                else:
                    self._weights(x, y, edits, busy, out)
        return out

    # neuron faults ----------------------------------------------------------------------------
    def _neurons(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, faults: torch.Tensor,
                 out: dict[str, torch.Tensor]) -> None:
        ev, n_x = self.ev, len(x)
        sel = torch.isin(edits.fault, faults)
        lo = torch.full((len(edits),), -1, dtype=torch.int64)
        hi = torch.full((len(edits),), -1, dtype=torch.int64)
        lo.scatter_reduce_(0, edits.fault[sel], edits.layer_ids[sel], "amin", include_self=False)
        hi.scatter_reduce_(0, edits.fault[sel], edits.layer_ids[sel], "amax", include_self=False)
        group = torch.where(lo[faults] == hi[faults], lo[faults], torch.full_like(lo[faults], -1))
        for g in group.unique().tolist():
            members = faults[group == g]
            layer = edits.layer_names[g] if g >= 0 else None
            split = ev._split
            if layer is not None and split is not None and split.can_split(layer):
                self._neurons_fx(x, y, edits, members, layer, out)
            else:
                self._neurons_hooks(x, y, edits, members, out)

    def _pairs(self, edits: FaultEdits, members: torch.Tensor, n_x: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pairs (fault, input) of ``members`` (fault-major) and every (edit, pair) that applies:
        returns pair faults, pair inputs, edit ids, pair ids."""
        local = torch.full((len(edits),), -1, dtype=torch.int64)
        local[members] = torch.arange(len(members))
        ids = torch.isin(edits.fault, members).nonzero().flatten()
        f_local = local[edits.fault[ids]]
        if self._diagonal:  # fault i meets image i: one pair per fault, every edit in it
            return members, members, ids, f_local
        every = edits.sample[ids] < 0
        pf = members.repeat_interleave(n_x)
        pn = torch.arange(n_x).repeat(len(members))
        e_all = ids[every].repeat_interleave(n_x)
        p_all = (f_local[every] * n_x).repeat_interleave(n_x) + torch.arange(n_x).repeat(int(every.sum()))
        e_one = ids[~every]
        p_one = f_local[~every] * n_x + edits.sample[e_one]
        return pf, pn, torch.cat([e_all, e_one]), torch.cat([p_all, p_one])

    def _chunks(self, n: int, batch: int) -> list[tuple[int, int]]:
        size = self.ev.chunk_size or batch
        return [(s, min(s + size, n)) for s in range(0, n, size)]

    def _store(self, out: dict[str, torch.Tensor], logits: torch.Tensor, golden: Any, y: torch.Tensor,
               pf: torch.Tensor, pn: torch.Tensor, changed: torch.Tensor) -> None:
        rows = pn.to(logits.device)
        f_loss = F.cross_entropy(logits.float(), y.index_select(0, rows), reduction="none")
        col = self._col(pn)
        out["faulty_pred"][pf, col] = logits.argmax(1).cpu()
        out["faulty_loss"][pf, col] = f_loss.cpu()
        out["delta_loss"][pf, col] = (f_loss - golden.loss.index_select(0, rows)).abs().cpu()
        out["nonfinite"][pf, col] = ~torch.isfinite(logits).all(1).cpu()
        out["masked"][pf, col] = ~changed.cpu()

    def _edit_fn(self, edits: FaultEdits, e: torch.Tensor, rows: torch.Tensor, layer: str, changed: torch.Tensor) -> Any:
        ev = self.ev
        fmt = ev._out_fmt[layer]
        bound = ev._stats[layer].out_max_abs if ev.range_detector else None

        def apply(value: torch.Tensor) -> torch.Tensor:
            new, hit = edit_tensor(value, fmt, rows, edits.index[e], edits.op_codes[e], edits.mask[e], bound)
            changed.index_put_((rows.to(changed.device)[hit],), torch.ones((), dtype=torch.bool, device=changed.device))
            return new

        return apply

    def _neurons_fx(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, members: torch.Tensor,
                    layer: str, out: dict[str, torch.Tensor]) -> None:
        ev, n_x = self.ev, len(x)
        cut = ev._split.cut(layer)
        golden = ev._golden(x, y, "neuron", list(cut.live))
        values = [golden.values[n] for n in cut.live]
        scalars = any(not isinstance(v, torch.Tensor) for v in values[1:])
        state = ev._state("neuron")
        pf, pn, pe, pp = self._pairs(edits, members, n_x)
        for start, stop in self._chunks(len(pf), n_x):
            used = stop - start
            rows = pn[start:stop]
            if scalars and used < n_x:  # shapes read before the cut fix the batch size
                rows = torch.cat([rows, rows[:1].expand(n_x - used)])
            inside = (pp >= start) & (pp < stop)
            changed = torch.zeros(len(rows), dtype=torch.bool)
            live = [v.index_select(0, rows.to(x.device)) if _batched(v, n_x) else v for v in values]
            live[0] = self._edit_fn(edits, pe[inside], pp[inside] - start, layer, changed)(live[0])
            logits = live[0] if cut.identity else ev._call(cut.suffix, state, *live)
            self._store(out, logits[:used], golden, y, pf[start:stop], pn[start:stop], changed[:used])
        self._count("fx", len(pf))

    def _neurons_hooks(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, members: torch.Tensor,
                       out: dict[str, torch.Tensor]) -> None:
        ev, n_x = self.ev, len(x)
        golden = ev._golden(x, y, "neuron")
        state = ev._state("neuron")
        pf, pn, pe, pp = self._pairs(edits, members, n_x)
        modules = ev._modules
        for start, stop in self._chunks(len(pf), n_x):
            inside = (pp >= start) & (pp < stop)
            e, r = pe[inside], pp[inside] - start
            changed = torch.zeros(stop - start, dtype=torch.bool)
            handles = []
            try:
                for lid in edits.layer_ids[e].unique().tolist():
                    name = edits.layer_names[lid]
                    pick = edits.layer_ids[e] == lid
                    fn = self._edit_fn(edits, e[pick], r[pick], name, changed)
                    handles.append(modules[name].register_forward_hook(lambda m, a, o, fn=fn: fn(o)))
                logits = ev._call(ev.model, state, x.index_select(0, pn[start:stop].to(x.device)))
            finally:
                for handle in handles:
                    handle.remove()
            self._store(out, logits, golden, y, pf[start:stop], pn[start:stop], changed)
        self._count("hooks", len(pf))

    # weight faults ----------------------------------------------------------------------------
    def _weights(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, faults: torch.Tensor,
                 out: dict[str, torch.Tensor]) -> None:
        if bool((edits.sample[torch.isin(edits.fault, faults)] >= 0).any()):
            raise ValueError("weight faults are permanent: their edits meet every input (sample -1)")
        counts = torch.bincount(edits.fault, minlength=len(edits))
        ids = torch.isin(edits.fault, faults).nonzero().flatten()
        single = ids[(counts[edits.fault[ids]] == 1) & (edits.op_codes[ids] != META)]
        for lid in edits.layer_ids[single].unique().tolist():
            self._weights_delta(x, y, edits, single[edits.layer_ids[single] == lid], edits.layer_names[lid], out)
        many = faults[~torch.isin(faults, edits.fault[single])]
        for f in many.tolist():
            self._weights_full(x, y, edits, f, out)

    def _held_weight(self, layer: str) -> torch.Tensor:
        ev = self.ev
        weight = (ev._state("weight") or {}).get(f"{layer}.weight")
        return ev._modules[layer].weight.detach() if weight is None else weight

    def _weights_delta(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, e: torch.Tensor,
                       layer: str, out: dict[str, torch.Tensor]) -> None:
        ev, n_x = self.ev, len(x)
        module = ev._modules[layer]
        weight = self._held_weight(layer)
        index = edits.index[e].to(weight.device)
        value, hit = edited_elements(weight, ev._w_fmt[layer], index, edits.op_codes[e], edits.mask[e])
        state = ev._state("weight") or {}
        params = {k: state.get(f"{layer}.{k}", v.detach()) for k, v in
                  [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)] if k != "weight"}
        reps = 1 if self._diagonal else n_x
        pf = edits.fault[e].repeat_interleave(reps)
        pn = edits.fault[e] if self._diagonal else torch.arange(n_x).repeat(len(e))
        pv = value.repeat_interleave(reps)
        pk = index.repeat_interleave(reps)
        ph = hit.cpu().repeat_interleave(reps)
        split = ev._split
        cut = split.cut(layer) if split is not None and split.can_split(layer) else None
        if cut is not None and cut.layer_input is not None and supports_delta(module):
            golden = ev._golden(x, y, "weight", [*cut.live, cut.layer_input])
            values = [golden.values[n] for n in cut.live]
            inp = golden.values[cut.layer_input]
            scalars = any(not isinstance(v, torch.Tensor) for v in values[1:])
            for start, stop in self._chunks(len(pf), n_x):
                used = stop - start
                rows, k, v = pn[start:stop], pk[start:stop], pv[start:stop]
                if scalars and used < n_x:
                    pad = n_x - used
                    rows, k, v = (torch.cat([t, t[:1].expand(pad)]) for t in (rows, k, v))
                r = rows.to(x.device)
                live = [t.index_select(0, r) if _batched(t, n_x) else t for t in values]
                live[0] = apply_weight_faults(module, weight, inp.index_select(0, r), live[0], k, v, params)
                logits = live[0] if cut.identity else ev._call(cut.suffix, ev._state("weight"), *live)
                self._store(out, logits[:used], golden, y, pf[start:stop], pn[start:stop], ph[start:stop])
            self._count("delta", len(pf))
            return
        golden = ev._golden(x, y, "weight")
        for start, stop in self._chunks(len(pf), n_x):
            k, v = pk[start:stop], pv[start:stop]
            busy: list[bool] = []

            def hook(mod: nn.Module, args: Any, o: torch.Tensor, k=k, v=v) -> Any:
                if busy:
                    return None
                busy.append(True)
                try:
                    return apply_weight_faults(module, weight, args[0], o, k, v, params)
                finally:
                    busy.clear()

            handle = module.register_forward_hook(hook)
            try:
                logits = ev._call(ev.model, ev._state("weight"), x.index_select(0, pn[start:stop].to(x.device)))
            finally:
                handle.remove()
            self._store(out, logits, golden, y, pf[start:stop], pn[start:stop], ph[start:stop])
        self._count("hooks", len(pf))

    def _scratch_weight(self, layer: str) -> torch.Tensor:
        """A private copy of the layer's held weight, made once: edits go into it in place and
        are undone after the pass, so a fault of many edits never copies whole weights."""
        held = self._held_weight(layer)
        source, copy = self._scratch.get(layer, (None, None))
        if source is not held:  # first use, or the evaluator was profiled again
            copy = held.clone()
            self._scratch[layer] = (held, copy)
        return copy

    def _weights_full(self, x: torch.Tensor, y: torch.Tensor, edits: FaultEdits, f: int,
                      out: dict[str, torch.Tensor]) -> None:
        """One fault of many weight edits: the edited weights, one pass over all images."""
        ev, n_x = self.ev, len(x)
        golden = ev._golden(x, y, "weight")
        e = edits.edits_of(f)
        state = dict(ev._state("weight") or {})
        changed = False
        undo: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        try:
            for lid in edits.layer_ids[e].unique().tolist():
                name = edits.layer_names[lid]
                mine = e[edits.layer_ids[e] == lid]
                weight = self._held_weight(name)
                if bool((edits.op_codes[mine] == META).any()):  # the whole tensor depends on it
                    new, hit = edit_tensor(weight.unsqueeze(0), ev._w_fmt[name], torch.zeros_like(mine),
                                           edits.index[mine], edits.op_codes[mine], edits.mask[mine])
                    state[f"{name}.weight"] = new[0]
                else:
                    scratch = self._scratch_weight(name)
                    device = scratch.device
                    keys, _, values, hit = _edit_sparse(scratch, ev._w_fmt[name], edits.index[mine].to(device),
                                                        edits.op_codes[mine].to(device), edits.mask[mine].to(device))
                    flat = scratch.view(-1)
                    undo.append((flat, keys, flat[keys].clone()))
                    flat[keys] = values.to(flat.dtype)
                    state[f"{name}.weight"] = scratch
                changed = changed or bool(hit.any())
            images = torch.tensor([f]) if self._diagonal else torch.arange(n_x)
            logits = ev._call(ev.model, state, x.index_select(0, images.to(x.device)))
        finally:
            for flat, keys, old in undo:
                flat[keys] = old
        pf = torch.full((len(images),), f, dtype=torch.int64)
        self._store(out, logits, golden, y, pf, images, torch.full((len(images),), changed))
        self._count("weights", len(images))


class FaultModelEvaluator:
    """The campaign core for a fault model other than ``flip``: the runner plans sites (kind,
    layer, flat index, bit), one per image, as for single flips; each becomes the model's fault.

    * stuck-at, multi-bit (a burst from the planned bit up), metadata (the planned bit of the
      metadata the element depends on): the site itself;
    * multi-site: the planned site plus ``n - 1`` flips drawn over every profiled layer;
    * ber: the planned layer's tensor at rate ``p``, activations drawn anew for each image,
      weights once per batch of images (a trial), evaluated on every image of the batch.

    Draws are seeded by the spec's seed and the batch's planned sites, so a rerun (or a resumed
    run with the stored layout) draws the same errors. Outputs add ``masked`` to the engine's.
    """

    def __init__(self, evaluator: Any, fault_model: Any, seed: int = 0) -> None:
        self.ev = evaluator
        self.fault_model = get_fault_model(fault_model)
        self.fault_model.check(evaluator.fmt)
        self.edits = EditEvaluator(evaluator)
        self.seed = int(seed)

    def __getattr__(self, name: str) -> Any:  # layer_info, golden, profile, fmt ... as the engine's
        if name == "ev":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.ev, name)

    def _generator(self, faults: FaultSet) -> torch.Generator:
        import hashlib

        digest = hashlib.sha256()
        digest.update(str((self.seed, self.fault_model.describe(), faults.layer_names)).encode())
        digest.update(faults.index.numpy().tobytes())
        digest.update(faults.bit.numpy().tobytes())
        return torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little"))

    def _sizes(self, kind: str) -> dict[str, int]:
        column = "n_neurons" if kind == "neuron" else "n_weights"
        info = self.ev.layer_info
        return {str(n): int(v) for n, v in zip(info["layer"], info[column]) if int(v) > 0}

    def evaluate(self, x: torch.Tensor, y: Any, faults: Any) -> dict[str, torch.Tensor]:
        from headstrong.engine.inject import as_faultset

        faults = as_faultset(faults)
        fm, fmt = self.fault_model, self.ev.fmt
        if fm.single_site:
            return self.edits.evaluate(x, y, fm.from_sites(faults, fmt))
        kinds = set(faults.kind)
        if len(kinds) != 1 or len(faults.layer_names) != 1:
            raise ValueError(f"{fm.name} campaigns evaluate one layer and kind per batch of faults")
        kind, layer = kinds.pop(), faults.layer_names[0]
        g = self._generator(faults)
        n = len(faults)
        if fm.name == "multi-site":
            first = get_fault_model("flip").from_sites(faults.with_sample(torch.full((n,), -1)), fmt)
            more = get_fault_model("multi-site", n=fm.n - 1).sample(self._sizes(kind), n, fmt, kind=kind, generator=g) \
                if fm.n > 1 else first.select(torch.zeros(0, dtype=torch.int64))
            both = [first, more]
            edits = FaultEdits(torch.cat([e.fault for e in both]), [k for e in both for k in e.kind],
                               [lay for e in both for lay in e.layer], torch.cat([e.index for e in both]),
                               [o for e in both for o in e.op], torch.cat([e.mask for e in both]),
                               None, n, fm.name, kind)
            return self.edits.evaluate(x, y, edits)
        size = self._sizes(kind)[layer]
        if kind == "neuron":
            return self.edits.evaluate(x, y, fm.sample({layer: size}, n, fmt, kind=kind, inputs=1, generator=g))
        trial = fm.sample({layer: size}, 1, fmt, kind=kind, generator=g)
        rows = self.edits.evaluate_all_pairs(x, y, trial)
        return {k: v[0] for k, v in rows.items()}


def _batched(value: Any, batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch

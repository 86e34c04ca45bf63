"""A slow, literal injector for fault models: the yardstick for ``inject(..., fault_model=...)``.

For every fault and every image: deep-copy the model, hold the targeted tensors in the format,
edit the elements' bit patterns one edit at a time on Python ints (``fmt.encode`` in, the
format's ``decode`` out; metadata by hand: the float32 scale's bits, a block's exponent field),
run the whole network on the one image. Nothing is batched, cached or vectorised.
"""

from __future__ import annotations

import copy
import struct

import numpy as np
import torch
from torch import nn

from headstrong import formats

from _reference import _fmt_for, _profile, _targets


def _decode(fmt, codes: torch.Tensor, original: torch.Tensor, exponents: torch.Tensor | None = None) -> torch.Tensor:
    """Values of (edited) codes, shaped like ``original`` (one image's tensor, or a weight)."""
    if isinstance(fmt, formats.BlockFormat):
        return fmt.decode(codes, fmt.shared_exponents(original) if exponents is None else exponents)
    return fmt.decode(codes)


def _edit_element_codes(codes: torch.Tensor, records: list[dict]) -> torch.Tensor:
    """Flips first (one XOR per edit, in order), then bits forced to 0, then to 1: each on the
    one element's code as a Python int."""
    codes = codes.clone()
    for order in ("flip", "set0", "set1"):
        for rec in records:
            if rec["op"] != order:
                continue
            i, m = rec["index"], rec["mask"]
            code = int(codes[i])
            codes[i] = code ^ m if order == "flip" else (code & ~m if order == "set0" else code | m)
    return codes


def _metadata(fmt, t: torch.Tensor, rec: dict) -> torch.Tensor:
    """``t`` (one image's tensor or a weight) decoded with its metadata's bit flipped."""
    bit = rec["mask"].bit_length() - 1
    codes = fmt.encode(t).flatten().numpy()
    if isinstance(fmt, formats.IntFormat):
        held = struct.unpack("<I", struct.pack("<f", fmt.scale))[0]
        scale = np.array([held ^ (1 << bit)], np.uint32).view(np.float32)[0]
        low = np.array(codes, np.int64) & ((1 << fmt.bits) - 1)
        signed = np.where(low >> (fmt.bits - 1), low - (1 << fmt.bits), low).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return torch.from_numpy(signed * scale).view(t.shape)
    exps = fmt.shared_exponents(t).clone()
    length = t.shape[-1]
    row, pos = rec["index"] // length, rec["index"] % length
    flat = exps.view(-1, exps.shape[-1])
    field = int(flat[row, pos // fmt.block_size]) + 127
    flat[row, pos // fmt.block_size] = (field ^ (1 << bit)) - 127
    return fmt.decode(torch.from_numpy(codes).view(t.shape), exps)


def _apply(fmt, t: torch.Tensor, records: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` (held in ``fmt``) with the edits applied, and which elements changed."""
    held = fmt.quantize(t)
    meta = [r for r in records if r["op"] == "meta"]
    if meta:
        new = _metadata(fmt, t, meta[0])
        changed = (new != held) & ~(new.isnan() & held.isnan())
        return new, changed
    before = fmt.encode(t).flatten()
    after = _edit_element_codes(before, records)
    new = _decode(fmt, after.view(t.shape), t)
    return new, (after != before).view(t.shape)


def reference_models(model: nn.Module, x: torch.Tensor, records: list[dict], n_faults: int,
                     fmt: str = "fp32", range_detector: bool = True, base_kind: str = "neuron"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [n_faults, len(x), C] and masked [n_faults, len(x)] from edit records."""
    model = copy.deepcopy(model).eval()
    targets = _targets(model)
    names = list(dict.fromkeys(targets + [r["layer"] for r in records]))
    peak = _profile(model, x, names)
    held_weights = {}  # every target's weight held in the format, computed once
    with torch.no_grad():
        for name in targets:
            w = getattr(model.get_submodule(name), "weight", None)
            if isinstance(w, torch.Tensor) and fmt != "fp32":
                held_weights[name] = _fmt_for(fmt, float(w.abs().max())).quantize(w).to(w.dtype)
    logits = torch.zeros(n_faults, len(x), 10, dtype=x.dtype)
    masked = torch.ones(n_faults, len(x), dtype=torch.bool)
    for f in range(n_faults):
        for i in range(len(x)):
            mine = [r for r in records if r["fault"] == f and r.get("sample") in (None, i)]
            ours = [r for r in records if r["fault"] == f]
            neuron = [r for r in mine if r["kind"] == "neuron"]
            weight = [r for r in mine if r["kind"] == "weight"]
            hold_out = bool(neuron) or (not ours and base_kind == "neuron")
            hold_w = bool([r for r in ours if r["kind"] == "weight"]) or (not ours and base_kind == "weight")
            net = copy.deepcopy(model)
            modules = dict(net.named_modules())
            with torch.no_grad():
                if hold_w:
                    for name, w in held_weights.items():
                        modules[name].weight.copy_(w)
                for layer in dict.fromkeys(r["layer"] for r in weight):
                    w = modules[layer].weight
                    layer_fmt = _fmt_for(fmt, float(model.get_submodule(layer).weight.abs().max()))
                    new, changed = _apply(layer_fmt, w.detach().clone(), [r for r in weight if r["layer"] == layer])
                    w.copy_(new.to(w.dtype))
                    if bool(changed.any()):
                        masked[f, i] = False
            if fmt != "fp32" and hold_out:
                for name in targets:
                    layer_fmt = _fmt_for(fmt, peak[name])
                    modules[name].register_forward_hook(lambda mod, args, out, g=layer_fmt: g.quantize(out).to(out.dtype))
            for layer in dict.fromkeys(r["layer"] for r in neuron):
                layer_fmt = _fmt_for(fmt, peak[layer])

                def hook(mod, args, out, layer=layer, g=layer_fmt, f=f, i=i):
                    new, changed = _apply(g, out[0], [r for r in neuron if r["layer"] == layer])
                    if bool(changed.any()):
                        masked[f, i] = False
                    if range_detector:
                        bound = peak[layer]
                        flat = new.flatten()
                        for j in changed.flatten().nonzero().flatten().tolist():  # one element at a time
                            v = float(flat[j])
                            if not np.isfinite(v) or abs(v) > bound:
                                flat[j] = -bound if v < 0 else bound
                        new = flat.view(new.shape)
                    return new.unsqueeze(0).to(out.dtype)

                modules[layer].register_forward_hook(hook)
            with torch.no_grad():
                logits[f, i] = net(x[i : i + 1])[0]
    return logits, masked

"""Fault models: how hardware goes wrong, as small registered objects with a seeded sampler.

    fm = get_fault_model("stuck-at-1")            # or "flip", "multi-bit", "multi-site", "ber", "metadata"
    fm = get_fault_model("ber", p=1e-7)
    edits = fm.sample({"conv1": 1728, "fc": 5120}, count=100, fmt=fmt, kind="weight", generator=g)

Every model reduces to the same thing, ``FaultEdits``: a table of element edits, each belonging
to one fault (``fault`` column). An edit names a kind (neuron: one sample's output element;
weight: an element of the weight tensor), a layer, a flat index, an operation and a bit mask:

* ``flip``: XOR the element's bit pattern with ``mask`` (one bit: today's single flip; several:
  a multi-bit upset; one pattern per element: bit errors at a rate);
* ``set0`` / ``set1``: force the bits of ``mask`` to 0 / 1 (stuck-at; an edit that finds the bits
  already at that value changes nothing and counts as masked);
* ``meta``: XOR ``mask`` into the metadata the element depends on (the float32 scale of an int
  tensor, or the 8-bit exponent field of the element's block), so every value sharing it changes;
* ``value``: the element takes a new value, held in the format: the float32 whose bit pattern
  ``mask`` holds, or ``value_fn(old)`` when the edits carry a ``value_fn`` (value faults:
  ``headstrong.faults.value_models``).

A fault is all its edits at once, applied to every input (``sample == -1``) or to one input
row (``sample >= 0``: activations resampled per inference). Weight faults are permanent for the
inputs they meet; neuron faults hit each inference they are applied to. The engine applies
``FaultEdits`` exactly (``headstrong.inject(..., fault_model=...)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from headstrong import formats
from headstrong._registry import Registry
from headstrong.faults.faultset import KINDS, NO_SAMPLE, FaultSet, check_kinds, int_column, text_column

OPS = ("flip", "set0", "set1", "meta", "value")

M = TypeVar("M", bound=Callable[..., "FaultModel"])
_MODELS: Registry[Callable[..., "FaultModel"]] = Registry("fault model")


# ------------------------------------------------------------------------------- the edits table


class FaultEdits:
    """Faults as a table of element edits (columns, validated when built).

    Columns, one value per edit: ``fault`` (which fault, 0..n_faults-1), ``kind``, ``layer``,
    ``index`` (flat), ``op`` (flip, set0, set1, meta), ``mask`` (int64 bits) and ``sample``
    (-1: every input; otherwise the input row the edit hits). ``model`` names the fault model,
    ``base_kind`` the kind sampled (a fault with no edit, such as a bit-error trial that drew
    none, is a golden run with that kind's tensors held in the format).
    """

    __slots__ = ("fault", "kind_codes", "layer_ids", "layer_names", "index", "op_codes", "mask",
                 "sample", "n_faults", "model", "base_kind", "value_fn")

    def __init__(
        self,
        fault: Sequence[int] | torch.Tensor,
        kind: Sequence[str] | str,
        layer: Sequence[str] | str,
        index: Sequence[int] | torch.Tensor,
        op: Sequence[str] | str,
        mask: Sequence[int] | torch.Tensor,
        sample: Sequence[int] | torch.Tensor | None = None,
        n_faults: int | None = None,
        model: str = "flip",
        base_kind: str = "neuron",
        value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.fault = int_column(fault, "fault", unit="edit")
        n = len(self.fault)
        self.index = int_column(index, "index", n, unit="edit")
        self.mask = int_column(mask, "mask", n, unit="edit")
        self.sample = (torch.full((n,), NO_SAMPLE, dtype=torch.int64) if sample is None
                       else int_column(sample, "sample", n, unit="edit"))
        kinds, ops, layers = text_column(kind, n), text_column(op, n), text_column(layer, n)
        if not len(kinds) == len(ops) == len(layers) == n:
            raise ValueError(
                f"FaultEdits columns differ in length: fault {n}, kind {len(kinds)}, layer {len(layers)}, "
                f"op {len(ops)}; give one value per edit (or one string for all)"
            )
        check_kinds(kinds)
        bad = sorted({o for o in ops if o not in OPS})
        if bad:
            raise ValueError(f"unknown edit op {bad[0]!r}; expected one of {', '.join(OPS)}")
        if n and int(self.index.min()) < 0:
            raise ValueError(f"edit index must be >= 0, got {int(self.index.min())}")
        if n and int(self.mask.min()) < 0:
            raise ValueError(f"edit mask must be >= 0 (bits of the pattern), got {int(self.mask.min())}")
        if n and int(self.sample.min()) < NO_SAMPLE:
            raise ValueError("edit sample must be >= 0, or -1 for every input")
        top = int(self.fault.max()) + 1 if n else 0
        if n and int(self.fault.min()) < 0:
            raise ValueError(f"fault numbers must be >= 0, got {int(self.fault.min())}")
        if n_faults is None:
            n_faults = top
        if n_faults < top:
            raise ValueError(f"n_faults={n_faults} but edits name fault {top - 1}")
        names = list(dict.fromkeys(layers))
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"layer names must be strings, got {type(name).__name__}")
        lookup = {name: i for i, name in enumerate(names)}
        self.kind_codes = torch.tensor([KINDS.index(k) for k in kinds], dtype=torch.int64)
        self.op_codes = torch.tensor([OPS.index(o) for o in ops], dtype=torch.int64)
        self.layer_ids = torch.tensor([lookup[name] for name in layers], dtype=torch.int64)
        self.layer_names = tuple(names)
        if base_kind not in KINDS:
            raise ValueError(f"unknown fault kind {base_kind!r}; expected one of {', '.join(KINDS)}")
        self.n_faults = int(n_faults)
        self.model = str(model)
        self.base_kind = base_kind  # the kind of the campaign: how a fault with no edit is held
        self.value_fn = value_fn  # value edits: the element's new value from its old one

    # construction and views -------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], n_faults: int | None = None,
                     model: str = "flip", base_kind: str = "neuron") -> FaultEdits:
        """From dicts with keys fault, kind, layer, index, op, mask and optionally sample."""
        rows = list(records)
        allowed = {"fault", "kind", "layer", "index", "op", "mask", "sample"}
        for i, rec in enumerate(rows):
            extra, missing = set(rec) - allowed, allowed - {"sample"} - set(rec)
            if extra or missing:
                raise ValueError(
                    f"edit record {i} has unexpected keys {sorted(extra)} / lacks {sorted(missing)}; "
                    "expected fault, kind, layer, index, op, mask and optionally sample"
                )
        sample = [NO_SAMPLE if r.get("sample") is None else int(r["sample"]) for r in rows]
        return cls([int(r["fault"]) for r in rows], [r["kind"] for r in rows], [r["layer"] for r in rows],
                   [int(r["index"]) for r in rows], [r["op"] for r in rows], [int(r["mask"]) for r in rows],
                   sample, n_faults, model, base_kind)

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {"fault": int(f), "kind": KINDS[int(k)], "layer": self.layer_names[int(lid)], "index": int(i),
             "op": OPS[int(o)], "mask": int(m), "sample": None if int(s) < 0 else int(s)}
            for f, k, lid, i, o, m, s in zip(self.fault, self.kind_codes, self.layer_ids, self.index,
                                             self.op_codes, self.mask, self.sample)
        ]

    @property
    def kind(self) -> list[str]:
        return [KINDS[k] for k in self.kind_codes.tolist()]

    @property
    def layer(self) -> list[str]:
        return [self.layer_names[i] for i in self.layer_ids.tolist()]

    @property
    def op(self) -> list[str]:
        return [OPS[o] for o in self.op_codes.tolist()]

    @property
    def n_edits(self) -> int:
        return len(self.fault)

    def __len__(self) -> int:
        """The number of faults (a fault may hold many edits, or none: a bit-error trial that
        drew no error)."""
        return self.n_faults

    def edits_of(self, fault: int) -> torch.Tensor:
        """Row numbers of the edits of one fault."""
        return (self.fault == fault).nonzero().flatten()

    def select(self, rows: torch.Tensor) -> FaultEdits:
        """The edits at ``rows`` (fault numbers kept)."""
        new = object.__new__(FaultEdits)
        for name in ("fault", "kind_codes", "layer_ids", "index", "op_codes", "mask", "sample"):
            setattr(new, name, getattr(self, name)[rows])
        new.layer_names, new.n_faults, new.model = self.layer_names, self.n_faults, self.model
        new.base_kind, new.value_fn = self.base_kind, self.value_fn
        return new

    def with_sample(self, sample: torch.Tensor) -> FaultEdits:
        """The same edits with another sample column (-1: every input the fault meets)."""
        new = self.select(torch.arange(self.n_edits))
        new.sample = int_column(sample, "sample", self.n_edits, unit="edit")
        if self.n_edits and int(new.sample.min()) < NO_SAMPLE:
            raise ValueError("edit sample must be >= 0, or -1 for every input")
        return new

    def __repr__(self) -> str:
        return (f"FaultEdits({self.n_faults} {self.model} faults, {self.n_edits} edits over "
                f"{len(self.layer_names)} layers)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultEdits):
            return NotImplemented
        mine = (self.n_faults, self.model, self.base_kind, self.value_fn, self.to_records())
        return mine == (other.n_faults, other.model, other.base_kind, other.value_fn, other.to_records())

    def validate(self, model: nn.Module, fmt: Any, output_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        """Layer names, indices (neuron ones with ``output_shapes``) and masks against ``fmt``."""
        fmt = formats.get(fmt)
        FaultSet(self.kind, self.layer, self.index, 0).validate(model, output_shapes=output_shapes)
        if not self.n_edits:
            return
        meta = self.op_codes == OPS.index("meta")
        value = self.op_codes == OPS.index("value")
        if bool(value.any()) and getattr(fmt, "block_size", None):
            raise ValueError(f"value edits write a whole element; {fmt.name}'s elements share block exponents: "
                             "use a float, int or fixed-point format")
        for selected, width, what in ((~meta & ~value, fmt.bits, "bits"), (meta, fmt.metadata_bits, "metadata bits")):
            if not bool(selected.any()):
                continue
            if width == 0:
                fmt.flip_metadata_at(torch.zeros(1, 1), torch.zeros(1, dtype=torch.int64), 0)  # its error
            top = int(self.mask[selected].max())
            if top >= 1 << width:
                raise ValueError(
                    f"edit mask {top} sets bits outside {fmt.name}'s {width} {what}; "
                    f"allowed masks are 0..{(1 << width) - 1}"
                )


# ------------------------------------------------------------------------------- the models


class FaultModel(ABC):
    """A fault model: ``name``, its ``params``, ``check(fmt)`` and a seeded ``sample``.

    ``layers`` given to ``sample`` maps each layer name to its number of elements (per sample
    for neuron faults, the weight's size for weight faults); sites are drawn uniformly over all
    elements of all the layers given (one layer: per-layer sampling).
    """

    name: str = ""
    single_site: bool = True  # each fault is one edit of one element

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def check(self, fmt: Any) -> formats.NumberFormat:
        """The format, checked to suit this model (its bits, its metadata)."""
        return formats.get(fmt)

    def bit_choices(self, fmt: formats.NumberFormat, bits: Sequence[int] | None) -> torch.Tensor:
        width = fmt.bits
        if bits is None:
            return torch.arange(width)
        choices = torch.as_tensor(list(bits), dtype=torch.int64)
        if choices.numel() == 0 or int(choices.min()) < 0 or int(choices.max()) >= width:
            raise ValueError(f"bits {list(bits)} do not fit {fmt.name}; allowed positions are 0..{width - 1}")
        return choices

    @abstractmethod
    def sample(self, layers: Mapping[str, int], count: int, fmt: Any, kind: str = "neuron",
               generator: torch.Generator | None = None, inputs: int = 1,
               bits: Sequence[int] | None = None) -> FaultEdits:
        """``count`` faults drawn with ``generator``; ``inputs``: inferences each neuron fault
        is resampled for (models that hit every inference anew); ``bits``: allowed positions."""

    def planned_bits(self, fmt: formats.NumberFormat, bits: str | Sequence[int] | None) -> list[int]:
        """The bit positions a campaign plans its sites at (bit 0 = least significant): all of
        the format's (``None``), the positions given, or a bit group (sign, exponent, mantissa)."""
        if bits is None:
            return list(range(fmt.bits))
        if not isinstance(bits, str):
            bad = [b for b in bits if b >= fmt.bits]
            if bad:
                raise ValueError(f"bit(s) {bad} do not exist in {fmt.name}; expected positions 0..{fmt.bits - 1}")
            return list(bits)
        groups = fmt.bit_groups()
        if not groups.get(bits):
            have = ", ".join(g for g, members in groups.items() if members)
            raise ValueError(
                f"format {fmt.name} has no {bits} bits; its bit groups are {have} (or give 'all' or positions)"
            )
        return sorted(groups[bits])

    def permanent(self, kind: str) -> bool:
        """Whether a fault stays for every inference (then it meets many images in a campaign):
        a weight fault does; an activation upset hits one inference."""
        return kind == "weight"

    def expand(self, sites: FaultSet, fmt: Any, layers: Mapping[str, int],
               generator: torch.Generator | None = None) -> FaultEdits:
        """The faults a campaign plans as sites (one per fault: kind, layer, index, bit), as this
        model's edits. ``layers``: the sites per layer of the campaign's kind (what a model that
        spans layers draws from); ``generator``: for models that draw more than the site."""
        return self.from_sites(sites, fmt)

    def from_sites(self, sites: FaultSet, fmt: Any) -> FaultEdits:
        """Single-site faults given as sites (kind, layer, index, bit): one edit each."""
        if not self.single_site:
            raise ValueError(
                f"{self.name} faults are sampled, not given as single sites: use "
                f"get_fault_model({self.name!r}, ...).sample(...)"
            )
        fmt = self.check(fmt)
        op, mask = self._edit_of(sites.bit, fmt)
        kinds = sites.kind
        return FaultEdits(torch.arange(len(sites)), kinds, sites.layer, sites.index, op, mask,
                          sites.sample, len(sites), self.name, kinds[0] if kinds else "neuron")

    def _edit_of(self, bit: torch.Tensor, fmt: formats.NumberFormat) -> tuple[str, torch.Tensor]:
        raise NotImplementedError

    def _sites(self, layers: Mapping[str, int], count: int, kind: str,
               generator: torch.Generator | None) -> tuple[list[str], torch.Tensor]:
        """``count`` (layer, flat index) pairs uniform over all elements of ``layers``."""
        _check_count(count)
        check_kinds([kind])
        if not layers:
            raise ValueError("no layers to sample faults in: give at least one {layer: size}")
        names = list(layers)
        sizes = torch.tensor([int(layers[n]) for n in names], dtype=torch.int64)
        if int(sizes.min()) < 1:
            raise ValueError(f"layer {names[int(sizes.argmin())]!r} has no elements to fault")
        flat = torch.randint(0, int(sizes.sum()), (count,), generator=generator)
        ends = sizes.cumsum(0)
        which = torch.searchsorted(ends, flat, right=True)
        index = flat - (ends - sizes)[which]
        return [names[int(i)] for i in which], index

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({params})" if params else self.name


class _SingleSite(FaultModel):
    def sample(self, layers: Mapping[str, int], count: int, fmt: Any, kind: str = "neuron",
               generator: torch.Generator | None = None, inputs: int = 1,
               bits: Sequence[int] | None = None) -> FaultEdits:
        fmt = self.check(fmt)
        names, index = self._sites(layers, count, kind, generator)
        op, mask = self._draw(fmt, bits, count, generator)
        return FaultEdits(torch.arange(count), kind, names, index, op, mask, None, count, self.name, kind)

    def _draw(self, fmt: formats.NumberFormat, bits: Sequence[int] | None, count: int,
              generator: torch.Generator | None) -> tuple[str, torch.Tensor]:
        """The op and ``count`` masks: one bit drawn uniformly from the allowed ones."""
        choices = self.bit_choices(fmt, bits)
        return self._edit_of(choices[torch.randint(0, len(choices), (count,), generator=generator)], fmt)


class Flip(_SingleSite):
    """One transient bit flip (the default)."""

    name = "flip"

    def _edit_of(self, bit: torch.Tensor, fmt: formats.NumberFormat) -> tuple[str, torch.Tensor]:
        return "flip", _bit_masks(bit, fmt.bits, fmt.name)


class StuckAt(_SingleSite):
    """A bit forced to ``value``: permanent on a weight, every inference on an activation."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.name = f"stuck-at-{value}"

    def permanent(self, kind: str) -> bool:
        """A stuck bit stays stuck: on an activation too, it meets every inference."""
        return True

    def _edit_of(self, bit: torch.Tensor, fmt: formats.NumberFormat) -> tuple[str, torch.Tensor]:
        return f"set{self.value}", _bit_masks(bit, fmt.bits, fmt.name)


class MultiBit(_SingleSite):
    """``k`` bits of one value flip together: adjacent (``burst``) or anywhere in the value."""

    name = "multi-bit"

    def __init__(self, k: int, burst: bool = True) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"multi-bit: k must be a positive int (bits flipped per value), got {k!r}")
        if not isinstance(burst, bool):
            raise ValueError(f"multi-bit: burst must be true (adjacent bits) or false (anywhere), got {burst!r}")
        self.k, self.burst = k, burst

    @property
    def params(self) -> dict[str, Any]:
        return {"k": self.k, "burst": self.burst}

    def check(self, fmt: Any) -> formats.NumberFormat:
        fmt = formats.get(fmt)
        if self.k > fmt.bits:
            raise ValueError(
                f"multi-bit: k={self.k} is larger than {fmt.name}'s {fmt.bits} bits; allowed k: 1..{fmt.bits}"
            )
        return fmt

    def planned_bits(self, fmt: formats.NumberFormat, bits: str | Sequence[int] | None) -> list[int]:
        """A planned bit is a burst's lowest: by default every bit with k bits above it."""
        return list(range(fmt.bits - self.k + 1)) if bits is None else super().planned_bits(fmt, bits)

    def _draw(self, fmt: formats.NumberFormat, bits: Sequence[int] | None, count: int,
              generator: torch.Generator | None) -> tuple[str, torch.Tensor]:
        """Bursts: a lowest bit uniform over those whose k bits are all allowed; anywhere: k
        distinct allowed bits, uniformly (a random permutation per fault, vectorised)."""
        choices = self.bit_choices(fmt, bits)
        if self.burst:
            allowed = set(choices.tolist())
            starts = torch.tensor([s for s in range(fmt.bits - self.k + 1)
                                   if all(b in allowed for b in range(s, s + self.k))], dtype=torch.int64)
            if not len(starts):
                raise ValueError(f"multi-bit: no {self.k} adjacent bits among the allowed {sorted(allowed)}")
            return self._edit_of(starts[torch.randint(0, len(starts), (count,), generator=generator)], fmt)
        if self.k > len(choices):
            raise ValueError(f"multi-bit: k={self.k} is more than the {len(choices)} allowed bits")
        order = torch.rand(count, len(choices), generator=generator).argsort(dim=1)[:, : self.k]
        picked = choices[order]
        return "flip", torch.bitwise_left_shift(torch.ones_like(picked), picked).sum(1)

    def _edit_of(self, bit: torch.Tensor, fmt: formats.NumberFormat) -> tuple[str, torch.Tensor]:
        """A burst of k bits from ``bit`` upward (given sites name the burst's lowest bit)."""
        if len(bit) and int(bit.max()) > fmt.bits - self.k:
            raise ValueError(
                f"multi-bit: a burst of k={self.k} bits from bit {int(bit.max())} runs past {fmt.name}'s "
                f"{fmt.bits} bits; allowed lowest bits are 0..{fmt.bits - self.k}"
            )
        return "flip", torch.bitwise_left_shift(torch.full_like(bit, (1 << self.k) - 1), bit)


class Metadata(_SingleSite):
    """The shared exponent of a block (bfp) or the scale of an int tensor takes the flip."""

    name = "metadata"

    def check(self, fmt: Any) -> formats.NumberFormat:
        fmt = formats.get(fmt)
        if fmt.metadata_bits == 0:
            raise ValueError(
                f"metadata faults need a format with metadata; {fmt.name} has none (its values depend "
                "on their own bits alone); use int8, int16 (a float32 scale) or bfpM_B (shared exponents)"
            )
        return fmt

    def planned_bits(self, fmt: formats.NumberFormat, bits: str | Sequence[int] | None) -> list[int]:
        """Positions in the metadata (the float32 scale, a bfp exponent field), not the values'."""
        if isinstance(bits, str):
            raise ValueError(f"metadata faults take bit positions of the metadata or 'all', not {bits!r}")
        width = fmt.metadata_bits
        bad = [b for b in (bits or ()) if b >= width]
        if bad:
            raise ValueError(f"bit(s) {bad} do not exist in {fmt.name}'s metadata; expected positions 0..{width - 1}")
        return list(bits) if bits else list(range(width))

    def bit_choices(self, fmt: formats.NumberFormat, bits: Sequence[int] | None) -> torch.Tensor:
        width = fmt.metadata_bits
        if bits is None:
            return torch.arange(width)
        choices = torch.as_tensor(list(bits), dtype=torch.int64)
        if choices.numel() == 0 or int(choices.min()) < 0 or int(choices.max()) >= width:
            raise ValueError(
                f"metadata bits {list(bits)} do not fit {fmt.name}'s metadata; allowed positions are 0..{width - 1}"
            )
        return choices

    def _edit_of(self, bit: torch.Tensor, fmt: formats.NumberFormat) -> tuple[str, torch.Tensor]:
        return "meta", _bit_masks(bit, fmt.metadata_bits, f"{fmt.name}'s metadata")


class MultiSite(FaultModel):
    """``n`` independent single flips in one inference, anywhere across the layers given."""

    name = "multi-site"
    single_site = False

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"multi-site: n must be a positive int (faults per inference), got {n!r}")
        self.n = n

    @property
    def params(self) -> dict[str, Any]:
        return {"n": self.n}

    def sample(self, layers: Mapping[str, int], count: int, fmt: Any, kind: str = "neuron",
               generator: torch.Generator | None = None, inputs: int = 1,
               bits: Sequence[int] | None = None) -> FaultEdits:
        fmt = self.check(fmt)
        _check_count(count)
        names, index = self._sites(layers, count * self.n, kind, generator)
        choices = self.bit_choices(fmt, bits)
        bit = choices[torch.randint(0, len(choices), (count * self.n,), generator=generator)]
        fault = torch.arange(count).repeat_interleave(self.n)
        return FaultEdits(fault, kind, names, index, "flip", _bit_masks(bit, fmt.bits, fmt.name), None, count, self.name, kind)

    def expand(self, sites: FaultSet, fmt: Any, layers: Mapping[str, int],
               generator: torch.Generator | None = None) -> FaultEdits:
        """The planned flip plus ``n - 1`` more flips drawn over every layer of ``layers``."""
        fmt = self.check(fmt)
        n = len(sites)
        kind = sites.kind[0] if n else "neuron"
        first = Flip().from_sites(sites.with_sample(torch.full((n,), NO_SAMPLE, dtype=torch.int64)), fmt)
        if self.n == 1 or not n:
            return FaultEdits(first.fault, first.kind, first.layer, first.index, first.op, first.mask, None, n,
                              self.name, kind)
        more = MultiSite(self.n - 1).sample(layers, n, fmt, kind=kind, generator=generator)
        both = (first, more)
        return FaultEdits(torch.cat([e.fault for e in both]), [k for e in both for k in e.kind],
                          [lay for e in both for lay in e.layer], torch.cat([e.index for e in both]),
                          [o for e in both for o in e.op], torch.cat([e.mask for e in both]), None, n, self.name, kind)


class BitErrorRate(FaultModel):
    """Every bit of the chosen tensors flips independently with probability ``p``: weights once
    per fault (a campaign trial), activations anew for each of ``inputs`` inferences."""

    name = "ber"
    single_site = False

    def __init__(self, p: float) -> None:
        self.p = formats.check_rate(p)

    def permanent(self, kind: str) -> bool:
        """A weight trial stays for every inference; activations are drawn anew each time."""
        return kind == "weight"

    def expand(self, sites: FaultSet, fmt: Any, layers: Mapping[str, int],
               generator: torch.Generator | None = None) -> FaultEdits:
        """Per planned fault, one trial over its layer's tensor at rate ``p`` (for activations,
        the one inference it meets); the planned element and bit only pick the layer."""
        names = list(sites.layer_names)
        kinds = set(sites.kind)
        if len(kinds) > 1 or len(names) > 1:
            raise ValueError("ber faults are expanded one layer and kind at a time")
        if not len(sites):
            return FaultEdits([], "neuron", [], [], [], [], None, 0, self.name, "neuron")
        kind, layer = kinds.pop(), names[0]
        edits = self.sample({layer: int(layers[layer])}, len(sites), fmt, kind=kind, generator=generator)
        return edits.with_sample(torch.full((edits.n_edits,), NO_SAMPLE, dtype=torch.int64))

    @property
    def params(self) -> dict[str, Any]:
        return {"p": self.p}

    def sample(self, layers: Mapping[str, int], count: int, fmt: Any, kind: str = "neuron",
               generator: torch.Generator | None = None, inputs: int = 1,
               bits: Sequence[int] | None = None) -> FaultEdits:
        fmt = self.check(fmt)
        _check_count(count)
        check_kinds([kind])
        if isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"inputs must be a positive int (inferences per fault), got {inputs!r}")
        if bits is not None:
            raise ValueError("ber faults hit every bit of the format at the rate p; give bits=None")
        if not layers:
            raise ValueError("no layers to sample faults in: give at least one {layer: size}")
        rows = inputs if kind == "neuron" else 1
        cols: dict[str, list[torch.Tensor]] = {"fault": [], "layer": [], "index": [], "mask": [], "sample": []}
        names = list(layers)
        for fault in range(count):
            for lid, name in enumerate(names):
                size = int(layers[name])
                flat, mask = formats.sample_bit_errors(size * rows, fmt.bits, self.p, generator)
                cols["fault"].append(torch.full_like(flat, fault))
                cols["layer"].append(torch.full_like(flat, lid))
                cols["index"].append(flat % size)
                cols["mask"].append(mask)
                cols["sample"].append(flat // size if kind == "neuron" else torch.full_like(flat, NO_SAMPLE))
        cat = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.int64) for k, v in cols.items()}
        layer_col = [names[i] for i in cat["layer"].tolist()]
        return FaultEdits(cat["fault"], kind, layer_col, cat["index"], "flip", cat["mask"],
                          cat["sample"], count, self.name, kind)


def _bit_masks(bit: torch.Tensor, width: int, where: str) -> torch.Tensor:
    bit = torch.as_tensor(bit, dtype=torch.int64)
    if len(bit) and (int(bit.min()) < 0 or int(bit.max()) >= width):
        bad = int(bit.min()) if int(bit.min()) < 0 else int(bit.max())
        raise ValueError(f"bit {bad} is out of range for {where}; allowed bits are 0..{width - 1}")
    return torch.bitwise_left_shift(torch.ones_like(bit), bit)


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int (faults to draw), got {count!r}")


# ------------------------------------------------------------------------------- the registry


def register_fault_model(name: str) -> Callable[[M], M]:
    """File ``builder(**params)`` under ``name``."""

    def decorate(builder: M) -> M:
        _MODELS.add(name, builder)
        return builder

    return decorate


def list_fault_models() -> list[str]:
    """Registered fault model names, in registration order."""
    return list(_MODELS)


def get_fault_model(name: str | FaultModel = "flip", **params: Any) -> FaultModel:
    """The fault model called ``name`` with ``params`` (None values dropped): e.g.
    ``get_fault_model("ber", p=1e-7)``, ``get_fault_model("multi-bit", k=2, burst=False)``."""
    import inspect

    if isinstance(name, FaultModel):
        if any(v is not None for v in params.values()):
            raise ValueError(f"parameters given with the fault model object {name.name!r}; pass its name instead")
        return name
    if not isinstance(name, str):
        raise TypeError(f"fault model must be a name (str) or a FaultModel, got {type(name).__name__}")
    key = name.strip().lower()
    builder = _MODELS.get(key) if key in _MODELS else _MODELS.get(name)  # the error names the name given
    params = {k: v for k, v in params.items() if v is not None}
    signature = inspect.signature(builder).parameters.values()
    allowed = [p.name for p in signature]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no parameters"
        raise ValueError(f"fault model {key!r} {takes}; got {', '.join(unknown)}")
    missing = [p.name for p in signature if p.default is inspect.Parameter.empty and p.name not in params]
    if missing:
        raise ValueError(f"fault model {key!r} needs {', '.join(missing)} (e.g. {_EXAMPLES.get(key, '')})")
    return builder(**params)


_EXAMPLES = {"ber": "p=1e-7", "multi-bit": "k=2", "multi-site": "n=4"}


@register_fault_model("flip")
def _flip() -> FaultModel:
    return Flip()


@register_fault_model("stuck-at-0")
def _stuck_at_0() -> FaultModel:
    return StuckAt(0)


@register_fault_model("stuck-at-1")
def _stuck_at_1() -> FaultModel:
    return StuckAt(1)


@register_fault_model("multi-bit")
def _multi_bit(*, k: int, burst: bool = True) -> FaultModel:
    return MultiBit(k, burst)


@register_fault_model("multi-site")
def _multi_site(*, n: int) -> FaultModel:
    return MultiSite(n)


@register_fault_model("ber")
def _ber(*, p: float) -> FaultModel:
    return BitErrorRate(p)


@register_fault_model("metadata")
def _metadata() -> FaultModel:
    return Metadata()

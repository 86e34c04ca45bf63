"""``FaultSet``: faults as columns (kind, layer, index, bit, sample), validated against a model."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from headstrong._checks import check_int

KINDS = ("neuron", "weight")
NO_SAMPLE = -1  # the sample column's value for "every input" / "the i-th input"


def text_column(value: str | Iterable[str], n: int) -> list[str]:
    """A text column of a fault table: one string for every row, or one value per row."""
    return [value] * n if isinstance(value, str) else list(value)


def check_kinds(kinds: Iterable[str]) -> None:
    """Refuse a fault kind other than neuron or weight, naming the allowed ones."""
    bad = sorted({k for k in kinds if k not in KINDS})
    if bad:
        raise ValueError(f"unknown fault kind {bad[0]!r}; expected one of {', '.join(KINDS)}")


def _close_names(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:
        close = list(names)[:10]
    return ", ".join(close)


class FaultSet:
    """An immutable batch of single-bit faults stored as columns.

    Columns: ``kind`` (``"neuron"`` or ``"weight"``), ``layer`` (module name), ``index`` (flat,
    int64), ``bit`` (int64) and ``sample`` (int64, -1 when the fault is not tied to one input).
    Layer names are kept once in ``layer_names`` and referenced by ``layer_ids``.
    """

    __slots__ = ("_kind", "_layer_ids", "_layer_names", "_index", "_bit", "_sample")

    def __init__(
        self,
        kind: Sequence[str] | str,
        layer: Sequence[str] | str,
        index: Sequence[int] | torch.Tensor,
        bit: Sequence[int] | torch.Tensor | int,
        sample: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        index_t = _int_column(index, "index")
        n = len(index_t)
        bit_t = _int_column(bit, "bit", n)
        sample_t = (
            torch.full((n,), NO_SAMPLE, dtype=torch.int64)
            if sample is None
            else _int_column(sample, "sample", n)
        )
        kinds, layers = text_column(kind, n), text_column(layer, n)
        if len(kinds) != n or len(layers) != n:
            raise ValueError(
                f"FaultSet columns differ in length: kind {len(kinds)}, layer {len(layers)}, "
                f"index {n}; give one value per fault (or one string for all)"
            )
        check_kinds(kinds)
        for name in set(layers):
            if not isinstance(name, str):
                raise TypeError(f"layer names must be strings, got {type(name).__name__}")
        if n and int(index_t.min()) < 0:
            raise ValueError(f"fault index must be >= 0, got {int(index_t.min())}")
        if n and int(bit_t.min()) < 0:
            raise ValueError(f"fault bit must be >= 0, got {int(bit_t.min())}")
        if n and int(sample_t.min()) < NO_SAMPLE:
            raise ValueError("fault sample must be >= 0, or -1 for none")
        names: list[str] = []
        lookup: dict[str, int] = {}
        ids = []
        for name in layers:
            if name not in lookup:
                lookup[name] = len(names)
                names.append(name)
            ids.append(lookup[name])
        self._kind = torch.tensor([KINDS.index(k) for k in kinds], dtype=torch.int8)
        self._layer_ids = torch.tensor(ids, dtype=torch.int64)
        self._layer_names = tuple(names)
        self._index = index_t
        self._bit = bit_t
        self._sample = sample_t

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], model: nn.Module | None = None
    ) -> FaultSet:
        """Build from dicts with keys kind, layer, index, bit and optionally sample.

        With ``model``, layer names and weight indices are checked at once (neuron indices need
        an input to know the output shape: the engine checks them when it runs).
        """
        kinds, layers, index, bit, sample = [], [], [], [], []
        allowed = {"kind", "layer", "index", "bit", "sample"}
        for i, rec in enumerate(records):
            extra = set(rec) - allowed
            missing = {"kind", "layer", "index", "bit"} - set(rec)
            if extra or missing:
                raise ValueError(
                    f"fault record {i} has unexpected keys {sorted(extra)} / lacks {sorted(missing)}; "
                    f"expected kind, layer, index, bit and optionally sample"
                )
            kinds.append(rec["kind"])
            layers.append(rec["layer"])
            index.append(check_int(f"fault record {i}: index", rec["index"]))
            bit.append(check_int(f"fault record {i}: bit", rec["bit"]))
            s = rec.get("sample")
            missing_sample = s is None or (isinstance(s, float) and math.isnan(s))
            sample.append(NO_SAMPLE if missing_sample else check_int(f"fault record {i}: sample", s))
        faults = cls(kinds, layers, index, bit, sample)
        if model is not None:
            faults.validate(model)
        return faults

    @classmethod
    def from_frame(cls, frame: Any, model: nn.Module | None = None) -> FaultSet:
        """Build from a pandas DataFrame with the columns of ``to_frame``."""
        return cls.from_records(frame[[c for c in frame.columns if c in
                                       ("kind", "layer", "index", "bit", "sample")]]
                                .to_dict("records"), model)

    @classmethod
    def concat(cls, sets: Sequence[FaultSet]) -> FaultSet:
        """Join several fault sets end to end."""
        kinds: list[str] = []
        layers: list[str] = []
        for s in sets:
            kinds += s.kind
            layers += s.layer
        cat = lambda cols: torch.cat(cols) if cols else torch.zeros(0, dtype=torch.int64)  # noqa: E731
        return cls(kinds, layers, cat([s.index for s in sets]), cat([s.bit for s in sets]),
                   cat([s.sample for s in sets]))

    # columns --------------------------------------------------------------------------------
    @property
    def kind(self) -> list[str]:
        return [KINDS[k] for k in self._kind.tolist()]

    @property
    def kind_codes(self) -> torch.Tensor:
        """int8 tensor: 0 neuron, 1 weight."""
        return self._kind

    @property
    def layer(self) -> list[str]:
        return [self._layer_names[i] for i in self._layer_ids.tolist()]

    @property
    def layer_ids(self) -> torch.Tensor:
        return self._layer_ids

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The distinct layer names, in order of first appearance."""
        return self._layer_names

    @property
    def index(self) -> torch.Tensor:
        return self._index

    @property
    def bit(self) -> torch.Tensor:
        return self._bit

    @property
    def sample(self) -> torch.Tensor:
        return self._sample

    @property
    def has_sample(self) -> bool:
        """True when every fault names its sample."""
        return bool(len(self)) and bool((self._sample >= 0).all())

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, key: int | slice | torch.Tensor | Sequence[int]) -> FaultSet:
        if isinstance(key, int):
            if not -len(self) <= key < len(self):
                raise IndexError(f"fault {key} out of range for a FaultSet of {len(self)}")
            key = slice(key % len(self), key % len(self) + 1)
        if isinstance(key, slice):
            rows = torch.arange(len(self))[key]
        else:
            rows = torch.as_tensor(key)
            if rows.dtype == torch.bool:
                rows = rows.nonzero().flatten()
            rows = rows.to(torch.int64)
        new = object.__new__(FaultSet)
        new._kind = self._kind[rows]
        new._layer_ids = self._layer_ids[rows]
        new._layer_names = self._layer_names
        new._index = self._index[rows]
        new._bit = self._bit[rows]
        new._sample = self._sample[rows]
        return new

    def with_sample(self, sample: Sequence[int] | torch.Tensor) -> FaultSet:
        """The same faults, each tied to the given input row."""
        new = self[:]
        new._sample = _int_column(sample, "sample", len(self))
        return new

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {"kind": k, "layer": lay, "index": int(i), "bit": int(b),
             "sample": None if int(s) < 0 else int(s)}
            for k, lay, i, b, s in zip(self.kind, self.layer, self._index, self._bit, self._sample)
        ]

    def to_frame(self) -> Any:
        """A pandas DataFrame with columns kind, layer, index, bit, sample (-1: none)."""
        import pandas as pd

        return pd.DataFrame({
            "kind": pd.Categorical(self.kind, categories=list(KINDS)),
            "layer": self.layer,
            "index": self._index.numpy(),
            "bit": self._bit.numpy(),
            "sample": self._sample.numpy(),
        })

    def __repr__(self) -> str:
        return f"FaultSet({len(self)} faults over {len(self._layer_names)} layers)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultSet):
            return NotImplemented
        return self.to_records() == other.to_records()

    # validation -----------------------------------------------------------------------------
    def validate(
        self,
        model: nn.Module,
        output_shapes: Mapping[str, Sequence[int]] | None = None,
        bits: Mapping[str, int] | int | None = None,
    ) -> None:
        """Check every fault against ``model``.

        ``output_shapes`` (per-sample output shape of each layer) lets neuron indices be checked;
        ``bits`` (the format's width, per layer or one for all) lets bits be checked.
        """
        modules = dict(model.named_modules())
        names = [n for n in modules if n]
        codes = self._kind
        for lid, name in enumerate(self._layer_names):
            if name not in modules or not name:
                raise ValueError(
                    f"unknown layer {name!r}; close names in the model: {_close_names(name, names)}"
                )
            rows = self._layer_ids == lid
            module = modules[name]
            for code, kind in enumerate(KINDS):
                sel = rows & (codes == code)
                if not bool(sel.any()):
                    continue
                top = int(self._index[sel].max())
                if kind == "weight":
                    weight = getattr(module, "weight", None)
                    if not isinstance(weight, torch.Tensor):
                        raise ValueError(
                            f"weight fault on layer {name!r} of type {type(module).__name__}, "
                            f"which has no weight; weight faults need a module with a weight "
                            f"(Conv, Linear, normalisation layers)"
                        )
                    size = weight.numel()
                    if top >= size:
                        raise ValueError(
                            f"weight index {top} out of range for layer {name!r}: weight shape "
                            f"{tuple(weight.shape)} has {size} elements (index 0..{size - 1})"
                        )
                elif output_shapes is not None:
                    if name not in output_shapes:
                        raise ValueError(f"layer {name!r} never runs in the model's forward pass")
                    shape = tuple(output_shapes[name])
                    size = math.prod(shape)
                    if top >= size:
                        raise ValueError(
                            f"neuron index {top} out of range for layer {name!r}: output shape "
                            f"{shape} per sample has {size} elements (index 0..{size - 1})"
                        )
                if bits is not None:
                    width = bits if isinstance(bits, int) else bits[name]
                    btop = int(self._bit[sel].max())
                    if btop >= width:
                        raise ValueError(
                            f"bit {btop} out of range for a {width}-bit format (layer {name!r}); "
                            f"bits go from 0 to {width - 1}"
                        )


def _int_column(
    values: Sequence[int] | torch.Tensor | int, name: str, n: int | None = None
) -> torch.Tensor:
    if isinstance(values, bool):
        raise TypeError(f"{name} must be an integer, not {values!r}; True and False are not bit positions or indices")
    if isinstance(values, int):
        if n is None:
            raise TypeError(f"{name} must be a sequence of ints")
        return torch.full((n,), values, dtype=torch.int64)
    return int_column(values, name, n)


def int_column(values: Sequence[int] | torch.Tensor, name: str, n: int | None = None,
               unit: str = "fault") -> torch.Tensor:
    """``values`` as a 1-D int64 CPU tensor of one value per ``unit`` (n of them, if given)."""
    if isinstance(values, (list, tuple)):
        if any(isinstance(v, bool) for v in values):
            raise TypeError(f"{name} must hold integers; got True/False, which torch would count as 1/0")
    t = torch.as_tensor(values)
    if t.numel() == 0:
        t = torch.zeros(0, dtype=torch.int64)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    t = t.detach().to("cpu", torch.int64).reshape(-1).clone()
    if n is not None and len(t) != n:
        raise ValueError(f"{name} has {len(t)} values for {n} {unit}s; give one per {unit}")
    return t

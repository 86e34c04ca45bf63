"""Value faults, as PyTorchFI has them: an element takes a new value instead of a flipped bit.

    get_fault_model("zero")                          # the value becomes 0
    get_fault_model("random-value", low=-1, high=1)  # a value drawn uniformly in [low, high]
    ValueFunction(lambda old: -old, name="negate")   # any function of the old value

PyTorchFI's error models (``zero_func_rand_neuron``, ``random_value(min_val, max_val)``, a
custom ``func`` on the old value) change values, not bits. Here each is one ``value`` edit per
fault: the element's new value, or the function to apply to its old one, which the engine
computes on the element as the format holds it and holds the result in the format again (an
int8 tensor saturates at its scale, fp16 rounds), so the golden and the faulty run differ only by
the fault. Value faults on a weight are permanent, on an activation they hit one inference,
as flips do; the site's bit, where one is given, is not used. Block formats are refused: their
elements share an exponent, so a value written into one is not that element's alone.

A user function becomes a fault model by registering it (see the README's Fault models):

    @register_fault_model("halve")
    def _halve() -> FaultModel:
        return ValueFunction(lambda old: old / 2, name="halve")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import torch

from headstrong import formats
from headstrong.faults.faultset import FaultSet
from headstrong.faults.models import FaultEdits, FaultModel, register_fault_model

ValueFn = Callable[[torch.Tensor], torch.Tensor]
FUNCTION_MASK = 0x7FC0F00D  # a quiet NaN's pattern: the mask of a value edit whose value is value_fn(old)


def value_masks(values: torch.Tensor) -> torch.Tensor:
    """float32 values as the int64 column of a ``value`` edit: each value's float32 bit pattern."""
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return bits & 0xFFFFFFFF


def mask_values(masks: torch.Tensor) -> torch.Tensor:
    """The float32 values ``value_masks`` stored."""
    signed = torch.where(masks >= 1 << 31, masks - (1 << 32), masks)
    return signed.to(torch.int32).view(torch.float32)


class ValueFault(FaultModel):
    """The element becomes ``_new_values`` (drawn when sampled) or ``value_fn(old)`` (at run time)."""

    value_fn: Optional[ValueFn] = None

    def check(self, fmt: Any) -> formats.NumberFormat:
        fmt = formats.get(fmt)
        if getattr(fmt, "block_size", None):
            raise ValueError(
                f"{self.name} faults write a whole value; {fmt.name} holds values in blocks that share an "
                "exponent, so a value is not one element's alone; use a float, int or fixed-point format"
            )
        return fmt

    def _new_values(self, count: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """The value each of ``count`` faults writes (ignored when ``value_fn`` is set)."""
        return torch.zeros(count)

    def _edits(self, kinds: Sequence[str] | str, layers: Sequence[str] | str, index: torch.Tensor,
               sample: Optional[torch.Tensor], count: int, base_kind: str,
               generator: Optional[torch.Generator]) -> FaultEdits:
        if self.value_fn is not None:  # a marker, so edits that lost their function fail loudly
            masks = torch.full((count,), FUNCTION_MASK, dtype=torch.int64)
        else:
            masks = value_masks(self._new_values(count, generator))
        return FaultEdits(torch.arange(count), kinds, layers, index, "value", masks, sample, count, self.name,
                          base_kind, value_fn=self.value_fn)

    def sample(self, layers: Mapping[str, int], count: int, fmt: Any, kind: str = "neuron",
               generator: Optional[torch.Generator] = None, inputs: int = 1,
               bits: Sequence[int] | None = None) -> FaultEdits:
        self.check(fmt)
        if bits is not None:
            raise ValueError(f"{self.name} faults replace the whole value, not bits; give bits=None")
        names, index = self._sites(layers, count, kind, generator)
        return self._edits(kind, names, index, None, count, kind, generator)

    def from_sites(self, sites: FaultSet, fmt: Any) -> FaultEdits:
        """One value edit per site (its bit is not used); random values drawn with the model's seed."""
        return self.expand(sites, fmt, {}, None)

    def expand(self, sites: FaultSet, fmt: Any, layers: Mapping[str, int],
               generator: Optional[torch.Generator] = None) -> FaultEdits:
        self.check(fmt)
        kinds = sites.kind
        return self._edits(kinds, sites.layer, sites.index, sites.sample, len(sites),
                           kinds[0] if kinds else "neuron", generator)


class Zero(ValueFault):
    """The value becomes 0 (a dead neuron, a cleared weight)."""

    name = "zero"


class RandomValue(ValueFault):
    """The value becomes one drawn uniformly in [``low``, ``high``] (PyTorchFI's default: [-1, 1]).

    Drawn with the sampler's generator; given sites (``hs.inject(..., fault_model=...)``) draw
    with ``seed``, so the same call gives the same values.
    """

    name = "random-value"

    def __init__(self, low: float = -1.0, high: float = 1.0, seed: int = 0) -> None:
        for what, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"random-value: {what} must be a finite number, got {value!r}")
        if not low < high:
            raise ValueError(f"random-value: low must be below high, got low={low!r}, high={high!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"random-value: seed must be a non-negative int, got {seed!r}")
        self.low, self.high, self.seed = float(low), float(high), seed

    @property
    def params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    def _new_values(self, count: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        generator = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        return self.low + (self.high - self.low) * torch.rand(count, generator=generator, dtype=torch.float64)


class ValueFunction(ValueFault):
    """The value becomes ``fn(old)``: ``fn`` takes a float32 tensor of old values (as the format
    holds them) and returns new values of the same shape; the engine holds them in the format."""

    def __init__(self, fn: ValueFn, name: str = "value-function") -> None:
        if not callable(fn):
            raise TypeError(f"ValueFunction needs a callable of the old values, got {type(fn).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"ValueFunction: name must be a non-empty string, got {name!r}")
        self.value_fn = fn
        self.name = name


@register_fault_model("zero")
def _zero() -> FaultModel:
    return Zero()


@register_fault_model("random-value")
def _random_value(*, low: float = -1.0, high: float = 1.0, seed: int = 0) -> FaultModel:
    return RandomValue(low, high, seed)


__all__ = ["FUNCTION_MASK", "RandomValue", "ValueFault", "ValueFunction", "Zero", "mask_values", "value_masks"]

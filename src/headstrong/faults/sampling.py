"""Sample sizes (Leveugle et al., DATE 2009) and seeded uniform fault samplers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import torch

from headstrong.faults.faultset import FaultSet


def sample_size(population: int, margin: float = 0.01, confidence: float = 0.99, p: float = 0.5) -> int:
    """Faults to draw so a proportion is within ``margin`` at ``confidence``.

    ``n = N / (1 + e^2 (N - 1) / (t^2 p (1 - p)))``, rounded up, with t the two-sided normal
    quantile of ``confidence``.
    """
    if not isinstance(population, int) or population < 1:
        raise ValueError(f"population must be a positive int, got {population!r}")
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    t = NormalDist().inv_cdf(0.5 + confidence / 2)
    n = population / (1 + margin**2 * (population - 1) / (t**2 * p * (1 - p)))
    return min(population, math.ceil(n - 1e-9))


def _shape_of(site: Any, key: str) -> tuple[int, ...]:
    if isinstance(site, (Sequence, torch.Size)) and not isinstance(site, str):
        return tuple(int(s) for s in site)
    if isinstance(site, Mapping) or hasattr(site, "__getitem__"):
        value = site[key]
        return tuple(int(s) for s in value)
    raise TypeError(f"expected a shape or a layer_info row with {key!r}, got {type(site).__name__}")


def _layer_of(site: Any, layer: str | None) -> str:
    if layer is not None:
        return layer
    try:
        return str(site["layer"])
    except (TypeError, KeyError, IndexError) as error:
        raise ValueError("give layer= when sampling from a bare shape") from error


def _bits_tensor(bits: int | Sequence[int], n: int, generator: torch.Generator | None) -> torch.Tensor:
    if isinstance(bits, int):
        if bits < 1:
            raise ValueError(f"bits must be a positive format width, got {bits}")
        return torch.randint(0, bits, (n,), generator=generator)
    choices = torch.as_tensor(list(bits), dtype=torch.int64)
    if choices.numel() == 0 or int(choices.min()) < 0:
        raise ValueError("bits must be a width or a non-empty list of bit positions >= 0")
    return choices[torch.randint(0, len(choices), (n,), generator=generator)]


def _sample(kind: str, site: Any, key: str, n: int, bits: int | Sequence[int],
            generator: torch.Generator | None, layer: str | None) -> FaultSet:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shape = _shape_of(site, key)
    name = _layer_of(site, layer)
    size = math.prod(shape)
    if size < 1:
        raise ValueError(f"layer {name!r} has an empty {key} {shape}: nothing to sample")
    index = torch.randint(0, size, (n,), generator=generator)
    return FaultSet(kind, [name] * n, index, _bits_tensor(bits, n, generator))


def sample_neuron_faults(site: Any, n: int, bits: int | Sequence[int],
                         generator: torch.Generator | None = None, layer: str | None = None) -> FaultSet:
    """``n`` neuron faults drawn uniformly over one sample's output elements and the given bits.

    ``site``: a per-sample output shape (then pass ``layer``) or a ``layer_info`` row (with
    ``layer`` and ``output_shape``); ``bits``: a format width (all bits) or a list of bits.
    """
    return _sample("neuron", site, "output_shape", n, bits, generator, layer)


def sample_weight_faults(site: Any, n: int, bits: int | Sequence[int],
                         generator: torch.Generator | None = None, layer: str | None = None) -> FaultSet:
    """``n`` weight faults drawn uniformly over a layer's weight elements and the given bits."""
    return _sample("weight", site, "weight_shape", n, bits, generator, layer)

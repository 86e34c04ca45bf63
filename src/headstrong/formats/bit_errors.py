"""Bit errors at a rate: every bit of a tensor flips independently with probability ``p``.

Drawing one Bernoulli per bit costs ``numel * bits`` random numbers even when ``p = 1e-9`` and
nothing flips, so small rates take the equivalent two-step draw: the number of flipped bits
``k ~ Binomial(numel * bits, p)``, then ``k`` distinct bit positions uniformly (draws with
replacement, topped up until ``k`` distinct ones remain: by symmetry a uniform ``k``-subset).
From ``DENSE_RATE`` up, where ``k`` is a sizeable share of all bits, each bit plane is drawn
directly (one Bernoulli per element and bit, a loop over the format's bits, never elements).
Both ways the result is seeded by the ``torch.Generator`` given, and the same generator state
gives the same errors.
"""

from __future__ import annotations

import math

import torch

DENSE_RATE = 0.05


def check_rate(p: object) -> float:
    """A bit-error rate as a float in [0, 1]; anything else is refused with the allowed range."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"bit-error rate p must be a number in [0, 1], got {type(p).__name__}")
    value = float(p)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"bit-error rate p must be in [0, 1] (e.g. 1e-7), got {value}")
    return value


def sample_bit_errors(
    numel: int, bits: int, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (sorted, distinct, int64) of the elements hit and each one's XOR mask.

    ``numel`` elements of ``bits`` bits each; every bit flips with probability ``p``. The
    tensors are on the CPU (where ``generator`` lives); apply them with ``fmt.flip_mask``.
    """
    p = check_rate(p)
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be a non-negative int, got {numel!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be a format width in 1..32, got {bits!r}")
    total = numel * bits
    empty = torch.zeros(0, dtype=torch.int64)
    if total == 0 or p == 0.0:
        return empty, empty.clone()
    if p >= DENSE_RATE:
        return _dense(numel, bits, p, generator)
    count = torch.binomial(
        torch.tensor([float(total)], dtype=torch.float64),
        torch.tensor([p], dtype=torch.float64),
        generator=generator,
    )
    k = int(count.item())
    if k == 0:
        return empty, empty.clone()
    positions = torch.randint(0, total, (k,), generator=generator).unique()
    while len(positions) < k:  # rounds, not elements: duplicates are rare when k << total
        more = torch.randint(0, total, (k - len(positions),), generator=generator)
        positions = torch.cat([positions, more]).unique()
    element, bit = positions // bits, positions % bits
    index, inverse = element.unique(return_inverse=True)
    mask = torch.zeros(len(index), dtype=torch.int64)
    mask.scatter_add_(0, inverse, torch.bitwise_left_shift(torch.ones_like(bit), bit))
    return index, mask


def _dense(numel: int, bits: int, p: float, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(numel, dtype=torch.int64)
    for b in range(bits):  # one Bernoulli plane per bit of the format
        hit = torch.rand(numel, generator=generator) < p
        mask |= hit.long() << b
    index = mask.nonzero().flatten()
    return index, mask[index]


def bit_error_mask(
    shape: tuple[int, ...] | torch.Size, bits: int, p: float,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> torch.Tensor:
    """A dense int64 XOR mask of ``shape`` (most elements 0): ``sample_bit_errors`` laid out."""
    index, mask = sample_bit_errors(math.prod(shape), bits, p, generator)
    dense = torch.zeros(math.prod(shape), dtype=torch.int64)
    dense[index] = mask
    return dense.view(tuple(shape)).to(device) if device is not None else dense.view(tuple(shape))

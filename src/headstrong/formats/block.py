"""Block floating point ``bfpM_B``: blocks of B values share an exponent, each an M-bit mantissa.

Blocks are B consecutive values along the last dimension (a last block shorter than B takes
what is left of the row), so a block never spans two samples and results never depend on
batching. A 0-d tensor is one block of one value.

* **Shared exponent.** ``e = floor(log2(max|x|))`` over the block's finite values, i.e. the
  exponent of its largest magnitude (``2**e <= max|x| < 2**(e+1)``). An all-zero (or all
  non-finite) block gets ``e = -126``, float32's smallest normal exponent, as a hardware
  exponent field of zero would. ``shared_exponents(x)`` returns them, shape ``(..., ceil(L/B))``.
* **Mantissa.** Each value is ``m * 2**(e - (M - 2))`` with ``m`` an M-bit two's complement
  integer, so the largest magnitude lands in ``[2**(M-2), 2**(M-1))``. ``m`` is ``x / step``
  rounded half to even and saturated symmetrically to ``±(2**(M-1) - 1)`` (a largest value
  that rounds up to ``2**(M-1)`` becomes ``2**(M-1) - 1``); NaN becomes 0 and ±Inf saturates.
  Symmetric saturation keeps every block's exponent, so quantising is idempotent; the code
  ``-2**(M-1)`` is reached only by a flip.
* **Codes and flips.** ``encode`` returns the M-bit mantissa codes (bit ``M - 1`` is the sign);
  the exponent is metadata, so ``decode(codes, exponents)`` needs it back. ``flip`` XORs a
  mantissa bit and keeps the block's exponent, so flipping element i changes element i alone.
  Block formats need no scale: ``with_scale`` returns the format unchanged.

Arithmetic is float32 and exact: a step ``2**-n`` (n up to 171 for float32's smallest values)
is applied as two power-of-two factors ``2**a * 2**b`` (a + b = n, each within float32's normal
range), so scaling a value to its mantissa never rounds, and scaling a mantissa back rounds once,
only where the value falls below float32's normal range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from headstrong.formats._base import (
    Bit,
    NumberFormat,
    check_bit,
    check_codes,
    check_float_tensor,
    sign_extended_mask,
    to_signed,
    to_unsigned,
    xor_fresh,
)
from headstrong.formats._registry import register_family
from headstrong.formats.integer import code_dtype

ZERO_BLOCK_EXPONENT = -126
EXPONENT_FIELD_BITS = 8  # metadata: a block's exponent e is held as the field e + 127
EXPONENT_BIAS = 127


def _powers_of_two(k: torch.Tensor) -> torch.Tensor:
    """``2.0**k`` as float32, exact, for integer ``k`` in -126..127 (built from the bits)."""
    return ((k + 127) << 23).to(torch.int32).view(torch.float32)


@dataclass(frozen=True)
class BlockFormat(NumberFormat):
    """M-bit signed mantissas sharing one exponent per block of B values."""

    name: str
    mantissa_bits: int
    block_size: int

    @property
    def bits(self) -> int:  # type: ignore[override]
        return self.mantissa_bits

    # -- layout helpers: (..., L) <-> (..., blocks, B), padding the last block with zeros

    def _blocked(self, rows: torch.Tensor) -> torch.Tensor:
        length = rows.shape[-1]
        blocks = -(-length // self.block_size)
        pad = blocks * self.block_size - length
        padded = torch.nn.functional.pad(rows, (0, pad)) if pad else rows
        return padded.reshape(*rows.shape[:-1], blocks, self.block_size)

    def _unblocked(self, blocked: torch.Tensor, length: int) -> torch.Tensor:
        flat = blocked.reshape(*blocked.shape[:-2], blocked.shape[-2] * self.block_size)
        return flat[..., :length].contiguous()

    def _exponents(self, blocked: torch.Tensor) -> torch.Tensor:
        mag = blocked.abs().nan_to_num_(nan=0.0, posinf=0.0)
        amax = mag.amax(dim=-1)
        _, exp = torch.frexp(amax)  # amax = f * 2**exp with f in [0.5, 1)
        zero = torch.full_like(exp, ZERO_BLOCK_EXPONENT + 1)
        return (torch.where(amax > 0, exp, zero) - 1).long()

    def _factors(self, exponents: torch.Tensor, down: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Two float32 powers of two per block, shape ``(..., blocks, 1)``, whose product is
        ``2**(M - 2 - e)`` (value to mantissa) or, with ``down``, its inverse."""
        n = self.mantissa_bits - 2 - exponents
        if down:
            n = -n
        a = torch.div(n, 2, rounding_mode="floor")
        return _powers_of_two(a).unsqueeze(-1), _powers_of_two(n - a).unsqueeze(-1)

    def _per_element(self, factor: torch.Tensor, length: int) -> torch.Tensor:
        expanded = factor.expand(*factor.shape[:-1], self.block_size)
        return self._unblocked(expanded, length)

    def _mantissas(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocked mantissa codes (narrow ints, sign-extended) and the block exponents."""
        blocked = self._blocked(x.reshape(1) if x.dim() == 0 else x)
        exponents = self._exponents(blocked)
        up_a, up_b = self._factors(exponents, down=False)
        hi = (1 << (self.mantissa_bits - 1)) - 1
        m = (blocked * up_a).mul_(up_b)  # exact: only powers of two, no overflow
        m = m.round_().clamp_(-hi, hi).nan_to_num_(nan=0.0)  # clamp_ saturates ±Inf
        return m.to(code_dtype(self.mantissa_bits)), exponents

    def _values(self, codes: torch.Tensor, exponents: torch.Tensor, length: int) -> torch.Tensor:
        """float32 values of sign-extended codes of shape (..., length), any broadcast."""
        down_a, down_b = self._factors(exponents, down=True)
        values = codes.float()
        if values.shape == (*exponents.shape[:-1], length):  # no broadcast: block by block
            blocked = self._blocked(values).mul_(down_a).mul_(down_b)  # the one rounding, if any
            return self._unblocked(blocked, length)
        values.mul_(self._per_element(down_a, length))
        return values.mul_(self._per_element(down_b, length))

    # -- the public face

    def shared_exponents(self, x: torch.Tensor) -> torch.Tensor:
        """Each block's exponent ``floor(log2(max|x|))``, int64 of shape ``(..., ceil(L/B))``."""
        x = check_float_tensor(x, self.name)
        return self._exponents(self._blocked(x.reshape(1) if x.dim() == 0 else x))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each mantissa rounded (ties to even) and saturated, as float32."""
        x = check_float_tensor(x, self.name)
        codes, exponents = self._mantissas(x)
        down_a, down_b = self._factors(exponents, down=True)
        values = codes.float().mul_(down_a).mul_(down_b)
        return self._unblocked(values, x.shape[-1] if x.dim() else 1).reshape(x.shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """M-bit two's complement mantissa codes, int64 in the low M bits (exponents apart)."""
        x = check_float_tensor(x, self.name)
        codes, _ = self._mantissas(x)
        length = x.shape[-1] if x.dim() else 1
        return to_unsigned(self._unblocked(codes, length), self.mantissa_bits).reshape(x.shape)

    def decode(self, codes: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
        """Values of mantissa ``codes`` in blocks with ``exponents`` (from ``shared_exponents``)."""
        codes = check_codes(codes, self.name)
        exponents = check_codes(exponents, self.name)
        rows = codes.reshape(1) if codes.dim() == 0 else codes
        blocks = -(-rows.shape[-1] // self.block_size)
        if exponents.dim() == 0 or exponents.shape[-1] != blocks:
            raise ValueError(
                f"{self.name}: exponents have shape {tuple(exponents.shape)}; expected "
                f"(..., {blocks}), one per block of {self.block_size} along the last dimension"
            )
        values = self._values(to_signed(rows, self.mantissa_bits), exponents, rows.shape[-1])
        return values.reshape(()) if codes.dim() == 0 and values.numel() == 1 else values

    def flip(self, x: torch.Tensor, bit: Bit) -> torch.Tensor:
        """Quantise ``x``, XOR mantissa bit ``bit`` of each element, decode with its block's
        exponent (computed before the flip, so the other elements keep their values)."""
        x = check_float_tensor(x, self.name)
        codes, exponents = self._mantissas(x)
        bit = check_bit(bit, self.mantissa_bits, self.name, codes.device)
        length = x.shape[-1] if x.dim() else 1
        codes = self._unblocked(codes, length).reshape(x.shape)
        flipped = xor_fresh(codes, sign_extended_mask(bit, self.mantissa_bits))
        if x.dim() == 0:  # one block of one value: its factors are 0-d after the squeeze
            exponents = exponents.reshape(1)
            down_a, down_b = (f.reshape(()) for f in self._factors(exponents, down=True))
            return flipped.float().mul_(down_a).mul_(down_b)
        return self._values(flipped, exponents, length)

    def _edit_codes(self, x: torch.Tensor, edit: Any) -> torch.Tensor:
        """Edit the mantissa codes; every block keeps the exponent it had before the edit."""
        x = check_float_tensor(x, self.name)
        codes, exponents = self._mantissas(x)
        length = x.shape[-1] if x.dim() else 1
        codes = edit(self._unblocked(codes, length).reshape(x.shape))
        if x.dim() == 0:
            down_a, down_b = (f.reshape(()) for f in self._factors(exponents.reshape(1), down=True))
            return codes.float().mul_(down_a).mul_(down_b)
        return self._values(codes, exponents, length)

    @property
    def metadata_bits(self) -> int:
        """Each block's exponent is an 8-bit field holding ``e + 127`` (float32's bias)."""
        return EXPONENT_FIELD_BITS

    def flip_metadata_at(self, x: torch.Tensor, index: torch.Tensor, bit: Bit) -> torch.Tensor:
        """``quantize(x)`` with, in each sample n, bit ``bit[n]`` of the exponent field of the
        block holding flat element ``index[n]`` flipped: every value of that block changes.

        The field is ``e + 127`` in 8 bits, so a flip gives ``e' = (e + 127) ^ (1 << bit) - 127``
        in -127..128 (values may overflow to ±Inf: a result)."""
        x = check_float_tensor(x, self.name)
        if x.dim() < 2:
            raise ValueError(
                f"{self.name}: metadata flips need a tensor [N, ...] with at least one dimension "
                f"per sample (blocks run along the last one), got shape {tuple(x.shape)}"
            )
        codes, exponents = self._mantissas(x)
        index, bit = self._check_at(x, index, bit, EXPONENT_FIELD_BITS)
        n, length = x.shape[0], x.shape[-1]
        blocks = exponents.shape[-1]
        per_sample = exponents.reshape(n, -1)
        column = (index // length) * blocks + (index % length) // self.block_size
        rows = torch.arange(n, device=x.device)
        field = per_sample[rows, column] + EXPONENT_BIAS
        shift = bit if isinstance(bit, int) else bit.to(field.dtype)
        per_sample = per_sample.clone()
        per_sample[rows, column] = (field ^ torch.bitwise_left_shift(torch.ones_like(field), shift)) - EXPONENT_BIAS
        codes = self._unblocked(codes, length).reshape(x.shape)
        return self._values(codes, per_sample.reshape(exponents.shape), length)

    def bit_groups(self) -> dict[str, list[int]]:
        """``sign``: bit M-1 of the mantissa; ``mantissa``: the bits below it."""
        return {"sign": [self.mantissa_bits - 1], "mantissa": list(range(self.mantissa_bits - 1))}

    def describe(self) -> str:
        hi = (1 << (self.mantissa_bits - 1)) - 1
        return (
            f"mantissas ±{hi} x 2^(e-{self.mantissa_bits - 2}), "
            f"one exponent e per {self.block_size} values; saturates"
        )


@register_family("bfp", r"bfp(\d+)_(\d+)", template="bfpM_B", default="bfp8_16")
def block_float(mantissa: int, block: int) -> BlockFormat:
    """``bfpM_B``: M-bit signed mantissas (2..24), blocks of B values (1..65536)."""
    if not 2 <= mantissa <= 24:
        raise ValueError(
            f"block format bfp{mantissa}_{block}: M={mantissa} is outside 2..24 "
            "(M-bit signed mantissa, decoded as float32)"
        )
    if not 1 <= block <= 65536:
        raise ValueError(
            f"block format bfp{mantissa}_{block}: B={block} is outside 1..65536 "
            "(values per block along the last dimension)"
        )
    return BlockFormat(f"bfp{mantissa}_{block}", mantissa, block)

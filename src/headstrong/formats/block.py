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
"""

from __future__ import annotations

from dataclasses import dataclass

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
from headstrong.formats.integer import code_dtype, round_codes, scale_codes

ZERO_BLOCK_EXPONENT = -126


@dataclass(frozen=True)
class BlockFormat(NumberFormat):
    """M-bit signed mantissas sharing one exponent per block of B values."""

    name: str
    mantissa_bits: int
    block_size: int

    @property
    def bits(self) -> int:  # type: ignore[override]
        return self.mantissa_bits

    def shared_exponents(self, x: torch.Tensor) -> torch.Tensor:
        """Each block's exponent ``floor(log2(max|x|))``, int64 of shape ``(..., ceil(L/B))``."""
        x = check_float_tensor(x, self.name)
        rows = x.reshape(1) if x.dim() == 0 else x
        length = rows.shape[-1]
        blocks = -(-length // self.block_size)
        pad = blocks * self.block_size - length
        mag = rows.abs().nan_to_num_(nan=0.0, posinf=0.0)
        mag = torch.nn.functional.pad(mag, (0, pad)) if pad else mag
        amax = mag.reshape(*rows.shape[:-1], blocks, self.block_size).amax(dim=-1)
        _, exp = torch.frexp(amax)  # amax = f * 2**exp with f in [0.5, 1)
        zero = torch.full_like(exp, ZERO_BLOCK_EXPONENT + 1)
        return (torch.where(amax > 0, exp, zero) - 1).long()

    def _steps(self, exponents: torch.Tensor, length: int) -> torch.Tensor:
        """Per-element step ``2**(e - (M - 2))`` in float64, shape ``(..., length)``."""
        two = torch.tensor(2.0, dtype=torch.float64, device=exponents.device)
        per_block = torch.pow(two, exponents - (self.mantissa_bits - 2))  # exact, down to 2**-171
        shape = (*exponents.shape[:-1], exponents.shape[-1] * self.block_size)
        per_element = per_block.unsqueeze(-1).expand(*exponents.shape, self.block_size)
        return per_element.reshape(shape)[..., :length]

    def _codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_float_tensor(x, self.name)
        rows = x.reshape(1) if x.dim() == 0 else x
        steps = self._steps(self.shared_exponents(rows), rows.shape[-1])
        hi = (1 << (self.mantissa_bits - 1)) - 1
        codes = round_codes(rows, steps, -hi, hi, code_dtype(self.mantissa_bits))
        return codes.reshape(x.shape), steps.reshape(x.shape)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each mantissa rounded (ties to even) and saturated, as float32."""
        codes, steps = self._codes(x)
        return scale_codes(codes, steps)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """M-bit two's complement mantissa codes, int64 in the low M bits (exponents apart)."""
        codes, _ = self._codes(x)
        return to_unsigned(codes, self.mantissa_bits)

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
        steps = self._steps(exponents, rows.shape[-1])
        values = scale_codes(to_signed(rows, self.mantissa_bits), steps)
        return values.reshape(()) if codes.dim() == 0 and values.numel() == 1 else values

    def flip(self, x: torch.Tensor, bit: Bit) -> torch.Tensor:
        """Quantise ``x``, XOR mantissa bit ``bit`` of each element, decode with its block's
        exponent (computed before the flip, so the other elements keep their values)."""
        codes, steps = self._codes(x)
        bit = check_bit(bit, self.mantissa_bits, self.name, codes.device)
        return scale_codes(xor_fresh(codes, sign_extended_mask(bit, self.mantissa_bits)), steps)

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

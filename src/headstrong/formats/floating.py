"""Floating-point formats: fp32, fp16, bf16, fp8_e4m3 and fp8_e5m2.

Every value goes through torch's own dtype (``float16``, ``bfloat16``, ``float8_e4m3fn``,
``float8_e5m2``): quantising is a cast (round to nearest even), a flip is an XOR on the
same-width integer view, decoding a cast back to float32. Inputs are first converted to float32.

Overflow on quantising: fp16, bf16 and fp8_e5m2 are IEEE-like and round large values to ±Inf.
fp8_e4m3 is OCP's E4M3 ("fn": no infinities, one NaN pattern per sign, 0x7F/0xFF, largest
finite ±448): finite values beyond ±448 and ±Inf *saturate* to ±448, as NVIDIA's satfinite
conversion does, so a golden run never turns a large activation into NaN; NaN stays NaN.
A flip may produce Inf or NaN: that is returned as a value, never raised.
"""

from __future__ import annotations

import math
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
    xor_fresh,
)
from headstrong.formats._registry import register_format

_INT_VIEW = {8: torch.int8, 16: torch.int16, 32: torch.int32}


@dataclass(frozen=True)
class FloatFormat(NumberFormat):
    """A sign / exponent / mantissa format backed by a torch dtype of ``bits`` bits."""

    name: str
    dtype: torch.dtype
    exponent_bits: int
    mantissa_bits: int
    saturating: bool = False  # overflow saturates to ±max (formats without Inf)

    @property
    def bits(self) -> int:  # type: ignore[override]
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def max_value(self) -> float:
        """Largest finite value."""
        return float(torch.finfo(self.dtype).max)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value."""
        return float(torch.finfo(self.dtype).tiny)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal value."""
        return math.ldexp(self.min_normal, -self.mantissa_bits)

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        x = check_float_tensor(x, self.name)
        if self.saturating:
            x = x.clamp(-self.max_value, self.max_value)  # NaN passes through clamp
        return x.to(self.dtype)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rounded to the nearest value of the format (ties to even), as float32."""
        q = self._cast(x).float()
        # fp32 of a float32 input converts nothing: copy, so the result never aliases x
        return q.clone() if q.data_ptr() == x.data_ptr() else q

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """IEEE-style bit patterns of the quantised ``x``, as int64 in the low ``bits`` bits."""
        view = self._cast(x).view(_INT_VIEW[self.bits])
        return view.long() & ((1 << self.bits) - 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Values of bit patterns (only the low ``bits`` bits are read), as float32."""
        codes = check_codes(codes, self.name)
        view = to_signed(codes, self.bits).to(_INT_VIEW[self.bits])
        return view.view(self.dtype).float()

    def flip(self, x: torch.Tensor, bit: Bit) -> torch.Tensor:
        """Quantise ``x``, XOR bit ``bit`` of each element's pattern, decode to float32."""
        q = self._cast(x)
        bit = check_bit(bit, self.bits, self.name, q.device)
        codes = q.view(_INT_VIEW[self.bits])
        mask = sign_extended_mask(bit, self.bits)
        if q.data_ptr() == x.data_ptr():  # fp32 of a float32 input: q is x, never write to it
            flipped = codes ^ (mask.to(codes.dtype) if isinstance(mask, torch.Tensor) else mask)
        else:
            flipped = xor_fresh(codes, mask)
        return flipped.view(self.dtype).float()

    def _edit_codes(self, x: torch.Tensor, edit: Any) -> torch.Tensor:
        """Quantise, edit the same-width integer view (never written in place), decode."""
        codes = self._cast(x).view(_INT_VIEW[self.bits])
        return edit(codes).view(self.dtype).float()

    def bit_groups(self) -> dict[str, list[int]]:
        """``sign``: the top bit; ``exponent``: the next ``exponent_bits``; ``mantissa``: the
        rest."""
        m, e = self.mantissa_bits, self.exponent_bits
        return {
            "sign": [m + e],
            "exponent": list(range(m, m + e)),
            "mantissa": list(range(m)),
        }

    def describe(self) -> str:
        special = "no Inf, overflow saturates" if self.saturating else "±Inf, NaN"
        return (
            f"±{self.max_value:.6g}, min normal {self.min_normal:.3g}, "
            f"min subnormal {self.min_subnormal:.3g}; {special}"
        )


@register_format("fp32")
def fp32() -> FloatFormat:
    """IEEE 754 binary32."""
    return FloatFormat("fp32", torch.float32, exponent_bits=8, mantissa_bits=23)


@register_format("fp16")
def fp16() -> FloatFormat:
    """IEEE 754 binary16."""
    return FloatFormat("fp16", torch.float16, exponent_bits=5, mantissa_bits=10)


@register_format("bf16")
def bf16() -> FloatFormat:
    """bfloat16: fp32's exponent with a 7-bit mantissa."""
    return FloatFormat("bf16", torch.bfloat16, exponent_bits=8, mantissa_bits=7)


@register_format("fp8_e4m3")
def fp8_e4m3() -> FloatFormat:
    """OCP FP8 E4M3 (torch.float8_e4m3fn): no Inf, NaN = S.1111.111, max ±448."""
    return FloatFormat(
        "fp8_e4m3", torch.float8_e4m3fn, exponent_bits=4, mantissa_bits=3, saturating=True
    )


@register_format("fp8_e5m2")
def fp8_e5m2() -> FloatFormat:
    """OCP FP8 E5M2 (torch.float8_e5m2): IEEE-like, with ±Inf and NaNs, max ±57344."""
    return FloatFormat("fp8_e5m2", torch.float8_e5m2, exponent_bits=5, mantissa_bits=2)

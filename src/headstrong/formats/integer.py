"""Integer formats (int8, int16) and fixed point (``fxpW_F``): two's complement codes times a step.

A value is ``code * step``. Quantising rounds ``x / step`` to the nearest integer (ties to even)
and saturates at the format's range; NaN becomes 0 and ±Inf saturates. A flip XORs one bit of
the two's complement code (bit ``bits - 1`` is the sign), so it never saturates and never fails.

* ``int8`` / ``int16`` are symmetric: codes -(2**(b-1)-1) .. 2**(b-1)-1 on quantising (the code
  -2**(b-1) is reached only by a flip) and ``step = scale``. Without a scale the format computes
  one per tensor, ``scale = max|x| / (2**(b-1) - 1)`` over the finite elements (1.0 when that is
  0). A profiled scale is fixed with ``formats.get("int8", scale=s)`` or ``fmt.with_scale(s)``,
  which return a new format object; ``fmt.scale_for(x)`` tells which scale a call would use.
* ``fxpW_F`` is W-bit two's complement with F fraction bits (``fxp16_8`` is Q8.8): ``step =
  2**-F`` always, codes -2**(W-1) .. 2**(W-1)-1 (full range), so it needs no scale. W is 2..24
  and F 0..W-1: decoded values are float32, exact for codes of up to 24 bits.

Arithmetic: a scale given as a number (``get``, ``with_scale``, ``decode(scale=...)``) is rounded
to float32 and applied in float32, the fast path the engine takes with profiled scales; the
per-tensor scale (``scale_for(x)``, a 0-d float64 tensor) is computed and applied in float64, so
the largest element maps back to itself. Either way quantising is exactly idempotent. Codes are
held in the narrowest integer dtype (int8, int16, int32) while working.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from headstrong.formats._base import (
    Bit,
    NumberFormat,
    check_bit,
    check_codes,
    check_float_tensor,
    check_scale,
    sign_extended_mask,
    to_signed,
    to_unsigned,
    xor_fresh,
)
from headstrong.formats._registry import register_family, register_format


def code_dtype(bits: int) -> torch.dtype:
    """Narrowest signed integer dtype holding ``bits``-bit two's complement codes."""
    return torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32


def round_codes(
    x: torch.Tensor, step: torch.Tensor, lo: int, hi: int, dtype: torch.dtype
) -> torch.Tensor:
    """``x / step`` in ``step``'s float dtype, rounded half to even, saturated to ``lo..hi``
    (±Inf too; NaN → 0), as integer ``dtype``. ``step`` is a tensor on ``x``'s device, so the
    division is a true division on every device (no reciprocal shortcut for scalars)."""
    v = x.to(step.dtype) / step  # a new tensor: the in-place steps below never touch x
    return v.round_().clamp_(lo, hi).nan_to_num_(nan=0.0).to(dtype)


def scale_codes(codes: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Integer codes times ``step`` in ``step``'s dtype, rounded to float32."""
    return codes.to(step.dtype).mul_(step).float()


def float32_step(step: float, device: torch.device) -> torch.Tensor:
    """A step as a 0-d float32 tensor on ``device``."""
    return torch.tensor(step, dtype=torch.float32, device=device)


class _Linear(NumberFormat):
    """Shared work of int and fixed point: code = round(x / step), value = code * step."""

    bits: int
    lo: int  # smallest code produced by quantising
    hi: int  # largest code produced by quantising

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_float_tensor(x, self.name)
        step = self._step(x)
        return round_codes(x, step, self.lo, self.hi, code_dtype(self.bits)), step

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rounded to a multiple of the step (ties to even), saturated, as float32."""
        codes, step = self._codes(x)
        return scale_codes(codes, step)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Two's complement codes of the quantised ``x``, int64 in the low ``bits`` bits."""
        codes, _ = self._codes(x)
        return to_unsigned(codes, self.bits)

    def flip(self, x: torch.Tensor, bit: Bit) -> torch.Tensor:
        """Quantise ``x``, XOR bit ``bit`` of each two's complement code, decode to float32."""
        codes, step = self._codes(x)
        bit = check_bit(bit, self.bits, self.name, codes.device)
        return scale_codes(xor_fresh(codes, sign_extended_mask(bit, self.bits)), step)

    def _edit_codes(self, x: torch.Tensor, edit: Any) -> torch.Tensor:
        codes, step = self._codes(x)
        return scale_codes(edit(codes), step)

    def _decode(self, codes: torch.Tensor, step: float | torch.Tensor) -> torch.Tensor:
        codes = check_codes(codes, self.name)
        if isinstance(step, torch.Tensor):
            step = step.to(device=codes.device, dtype=torch.float64).reshape(())
        else:
            step = float32_step(step, codes.device)
        return scale_codes(to_signed(codes, self.bits), step)

    def bit_groups(self) -> dict[str, list[int]]:
        """``sign``: bit ``bits - 1``; ``magnitude``: the value bits below it."""
        return {"sign": [self.bits - 1], "magnitude": list(range(self.bits - 1))}


@dataclass(frozen=True)
class IntFormat(_Linear):
    """Symmetric ``bits``-bit integer with a per-tensor (or given) scale."""

    name: str
    bits: int
    scale: Optional[float] = None
    needs_scale = True

    def __post_init__(self) -> None:
        if self.scale is not None:  # kept as the float32 value it is applied as
            scale = float(torch.tensor(check_scale(self.scale), dtype=torch.float32))
            if not 0 < scale < float("inf"):
                raise ValueError(
                    f"scale {self.scale} is not a positive finite float32; allowed: "
                    "about 1.2e-38 .. 3.4e38"
                )
            object.__setattr__(self, "scale", scale)

    @property
    def lo(self) -> int:  # type: ignore[override]
        return -self.hi

    @property
    def hi(self) -> int:  # type: ignore[override]
        return (1 << (self.bits - 1)) - 1

    def scale_for(self, x: torch.Tensor) -> torch.Tensor:
        """The scale used for ``x`` (0-d float64 tensor on its device): the given one, else
        max|x| over the finite elements / (2**(bits-1) - 1), or 1.0 when that max is 0."""
        x = check_float_tensor(x, self.name)
        if self.scale is not None:
            return torch.tensor(self.scale, dtype=torch.float64, device=x.device)
        if x.numel() == 0:
            return torch.ones((), dtype=torch.float64, device=x.device)
        amax = x.abs().nan_to_num_(nan=0.0, posinf=0.0).amax().double()
        return torch.where(amax > 0, amax / self.hi, torch.ones_like(amax))

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            return float32_step(self.scale, x.device)
        return self.scale_for(x)

    def with_scale(self, scale: float | torch.Tensor) -> IntFormat:
        """A copy of this format with a fixed scale (e.g. profiled over a data set)."""
        return replace(self, scale=check_scale(scale))

    def decode(
        self, codes: torch.Tensor, scale: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Values of codes (low ``bits`` bits, two's complement) times ``scale``, as float32.

        The scale is the format's own if it has one; otherwise pass ``scale=fmt.scale_for(x)``
        (a tensor: applied in float64, as quantize did) or a number (applied as float32).
        """
        if scale is None:
            if self.scale is None:
                raise ValueError(
                    f"{self.name} has no fixed scale, so decode needs one: pass "
                    f"scale=fmt.scale_for(x), or use formats.get({self.name!r}, scale=...)"
                )
            scale = self.scale
        elif not isinstance(scale, torch.Tensor):
            scale = check_scale(scale)  # a number: _decode applies it as float32
        else:
            check_scale(scale)
        return self._decode(codes, scale)

    @property
    def metadata_bits(self) -> int:
        """The scale is held as a float32: 32 bits (31 sign, 30..23 exponent)."""
        return 32

    def flip_metadata_at(self, x: torch.Tensor, index: torch.Tensor, bit: Bit) -> torch.Tensor:
        """``quantize(x)`` decoded, in each sample n, with bit ``bit[n]`` of the float32 scale
        flipped: every value of the sample changes (``index`` only needs to be in range; the
        scale is per tensor). The flipped scale may be negative, zero, Inf or NaN: a result."""
        codes, step = self._codes(x)
        index, bit = self._check_at(codes, index, bit, 32)
        n = codes.shape[0]
        scale = step.float().reshape(1).expand(n).contiguous().view(torch.int32)
        mask = sign_extended_mask(bit, 32)
        mask = mask.to(torch.int32) if isinstance(mask, torch.Tensor) else mask
        flipped = (scale ^ mask).view(torch.float32)
        return codes.float().mul_(flipped.view(n, *([1] * (codes.dim() - 1))))

    def describe(self) -> str:
        scale = "per tensor" if self.scale is None else f"{self.scale:.6g}"
        return f"codes ±{self.hi} (two's complement) x scale ({scale}); saturates"


@dataclass(frozen=True)
class FixedFormat(_Linear):
    """W-bit two's complement with F fraction bits: step 2**-F, saturating."""

    name: str
    bits: int
    frac_bits: int

    @property
    def lo(self) -> int:  # type: ignore[override]
        return -(1 << (self.bits - 1))

    @property
    def hi(self) -> int:  # type: ignore[override]
        return (1 << (self.bits - 1)) - 1

    @property
    def step(self) -> float:
        """Value of the least significant bit, 2**-F."""
        return 2.0**-self.frac_bits

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        return float32_step(self.step, x.device)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Values of codes (low ``bits`` bits, two's complement) times 2**-F, as float32."""
        return self._decode(codes, self.step)

    def describe(self) -> str:
        return (
            f"{self.lo * self.step:.6g} .. {self.hi * self.step:.6g} in steps of "
            f"2^-{self.frac_bits}; saturates"
        )


@register_format("int8")
def int8(*, scale: Optional[float] = None) -> IntFormat:
    """8-bit symmetric integer."""
    return IntFormat("int8", 8, scale)


@register_format("int16")
def int16(*, scale: Optional[float] = None) -> IntFormat:
    """16-bit symmetric integer."""
    return IntFormat("int16", 16, scale)


@register_family("fxp", r"fxp(\d+)_(\d+)", template="fxpW_F", default="fxp16_8")
def fixed(total: int, frac: int) -> FixedFormat:
    """``fxpW_F``: W bits in all (2..24), F of them fraction bits (0..W-1)."""
    if not 2 <= total <= 24:
        raise ValueError(
            f"fixed-point format fxp{total}_{frac}: W={total} is outside 2..24 "
            "(W total bits, decoded as float32, exact up to 24 bits)"
        )
    if not 0 <= frac <= total - 1:
        raise ValueError(
            f"fixed-point format fxp{total}_{frac}: F={frac} is outside 0..{total - 1} "
            "(F fraction bits, below the sign bit)"
        )
    return FixedFormat(f"fxp{total}_{frac}", total, frac)

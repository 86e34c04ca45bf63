"""The common face of every number format, and the input checks they share.

Each format is a small frozen dataclass whose methods are pure tensor functions: they never
modify their input, always return new tensors (no autograd history), never leave the input's
device and never loop over elements in Python.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from typing import Callable, Union

import torch

Bit = Union[int, torch.Tensor]
Mask = Union[int, torch.Tensor]


class NumberFormat(ABC):
    """A number format: encode to bit patterns, decode, quantise, flip bits.

    Subclasses set ``name`` and ``bits`` and implement the abstract methods. ``needs_scale`` is
    True for formats whose values depend on a per-tensor scale (int8, int16): callers that have
    profiled one pass it with :meth:`with_scale`.
    """

    name: str
    bits: int
    needs_scale: bool = False

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bit patterns of ``x`` quantised to this format: int64, in the low ``bits`` bits."""

    @abstractmethod
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rounded into this format (round to nearest even), as float32."""

    @abstractmethod
    def flip(self, x: torch.Tensor, bit: Bit) -> torch.Tensor:
        """Quantise ``x``, flip bit ``bit`` of every element, decode to float32.

        ``bit`` is an int or an integer tensor that broadcasts against ``x`` (one bit per
        sample, say); the result has the broadcast shape.
        """

    def flip_at(self, x: torch.Tensor, index: torch.Tensor, bit: Bit) -> torch.Tensor:
        """``quantize(x)`` with one element of each sample flipped: in sample ``n`` (dimension
        0), the element at flat ``index[n]`` gets bit ``bit[n]`` (or ``bit``) flipped.

        Scales and block exponents come from the whole ``x``, so this is the safe way to hit
        one element per sample in every format (a flip of a gathered subset would take its
        scale, or its blocks, from the subset).
        """
        q = self.quantize(x)
        index = self._check_index(q, index)
        n = q.shape[0]
        if isinstance(bit, torch.Tensor) and bit.dim() > 0:
            if bit.shape != (n,):
                raise ValueError(
                    f"{self.name}: bit has shape {tuple(bit.shape)}; expected ({n},) or an int"
                )
            bit = bit.reshape(n, *([1] * (q.dim() - 1)))
        if q.numel() == 0:
            check_bit(bit, self.bits, self.name, q.device)  # still refuse a bad bit
            return q
        flipped = self.flip(x, bit).reshape(n, -1)
        out = q.reshape(n, -1)  # q is ours (quantize returns a new tensor): write into it
        column = index.view(n, 1)
        out.scatter_(1, column, flipped.gather(1, column))
        return out.view(q.shape)

    # -- edits beyond one flipped bit (fault models): XOR a mask, force bits, flip metadata

    def _edit_codes(self, x: torch.Tensor, edit: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Quantise ``x``, apply ``edit`` to its sign-extended codes (a signed integer tensor;
        ``edit`` returns new codes of the same dtype), decode to float32."""
        raise NotImplementedError(f"{self.name}: this format cannot edit codes")

    def flip_mask(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:
        """Quantise ``x``, XOR each element's bit pattern with ``mask`` (an int or an integer
        tensor broadcast against ``x``, using bits 0..bits-1), decode to float32.

        Several bits of one value (a multi-bit upset) or one pattern per element (bit errors at
        a rate) in one pass; ``flip_mask(x, 1 << b)`` equals ``flip(x, b)``.
        """
        x = check_float_tensor(x, self.name)
        mask = check_mask(mask, self.bits, self.name, x.device)
        signed = to_signed(mask, self.bits) if isinstance(mask, torch.Tensor) else _signed_int(mask, self.bits)

        def edit(codes: torch.Tensor) -> torch.Tensor:
            return codes ^ (signed.to(codes.dtype) if isinstance(signed, torch.Tensor) else signed)

        return self._edit_codes(x, edit)

    def set_bits(self, x: torch.Tensor, mask: Mask, value: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise ``x``, force the bits in ``mask`` to ``value`` (0 or 1), decode to float32.

        Returns the values and a bool tensor ``masked``: True where the forced bits already held
        ``value``, so the element is unchanged (a stuck-at fault that changes nothing is masked,
        not skipped). Elements whose mask is 0 are unchanged, hence masked.
        """
        x = check_float_tensor(x, self.name)
        if isinstance(value, bool) or value not in (0, 1):
            raise ValueError(f"{self.name}: a stuck bit's value must be 0 or 1, got {value!r}")
        mask = check_mask(mask, self.bits, self.name, x.device)
        signed = to_signed(mask, self.bits) if isinstance(mask, torch.Tensor) else _signed_int(mask, self.bits)
        unchanged: list[torch.Tensor] = []

        def edit(codes: torch.Tensor) -> torch.Tensor:
            m = signed.to(codes.dtype) if isinstance(signed, torch.Tensor) else signed
            new = codes | m if value else codes & ~m
            unchanged.append(new == codes)
            return new

        values = self._edit_codes(x, edit)
        return values, unchanged[0].reshape(values.shape)

    def apply_masks(
        self, x: torch.Tensor, xor: Mask = 0, clear: Mask = 0, set: Mask = 0  # noqa: A002
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise ``x``, XOR ``xor`` into each pattern, then force the bits of ``clear`` to 0
        and those of ``set`` to 1, decode: several faults on one tensor in one pass (editing in
        steps would re-quantise in between, which saturates int codes and moves block exponents).

        Returns the values and ``unchanged`` (True where the pattern came out as it went in).
        """
        x = check_float_tensor(x, self.name)
        masks = [check_mask(m, self.bits, self.name, x.device) for m in (xor, clear, set)]
        signed = [to_signed(m, self.bits) if isinstance(m, torch.Tensor) else _signed_int(m, self.bits)
                  for m in masks]
        unchanged: list[torch.Tensor] = []

        def edit(codes: torch.Tensor) -> torch.Tensor:
            flip, off, on = (m.to(codes.dtype) if isinstance(m, torch.Tensor) else m for m in signed)
            new = ((codes ^ flip) & ~off) | on
            unchanged.append(new == codes)
            return new

        values = self._edit_codes(x, edit)
        return values, unchanged[0].expand(values.shape)

    def stick(self, x: torch.Tensor, bit: Bit, value: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise ``x``, force bit ``bit`` (int or broadcast tensor) of every element to
        ``value``, decode; also returns ``masked`` (True where the bit already held ``value``)."""
        x = check_float_tensor(x, self.name)
        bit = check_bit(bit, self.bits, self.name, x.device)
        mask = torch.bitwise_left_shift(torch.ones_like(bit), bit) if isinstance(bit, torch.Tensor) else 1 << bit
        return self.set_bits(x, mask, value)

    @property
    def metadata_bits(self) -> int:
        """Width of the metadata a value depends on besides its own bits: 0 for formats without
        (floats, fixed point); int formats have a float32 scale, block formats an 8-bit exponent."""
        return 0

    def flip_metadata_at(self, x: torch.Tensor, index: torch.Tensor, bit: Bit) -> torch.Tensor:
        """``quantize(x)`` with, in each sample n, the metadata that element ``index[n]`` depends
        on (its block's shared exponent, or the scale) flipped at bit ``bit[n]``: every value that
        depends on it changes. Formats without metadata refuse."""
        raise ValueError(
            f"format {self.name} has no metadata to flip (its values depend on their own bits "
            "alone); metadata faults need a format with a scale (int8, int16) or shared "
            "exponents (bfpM_B, e.g. bfp8_16)"
        )

    def _check_index(self, q: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``index``, one flat index per sample of ``q`` (dimension 0), checked; as int64 on q's device."""
        if q.dim() == 0:
            raise ValueError(f"{self.name}: needs a tensor with a sample dimension, got a 0-d tensor")
        n, per_sample = q.shape[0], q[0].numel() if q.shape[0] else 0
        if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.dtype == torch.bool:
            raise TypeError(f"{self.name}: index must be an integer tensor of shape ({n},)")
        if index.shape != (n,):
            raise ValueError(
                f"{self.name}: index has shape {tuple(index.shape)}; expected ({n},), one flat "
                "index per sample"
            )
        index = index.to(device=q.device, dtype=torch.int64)
        lo, hi = torch.stack(torch.aminmax(index)).tolist() if n else (0, 0)  # one device sync
        if n and (lo < 0 or hi >= per_sample):
            raise ValueError(
                f"{self.name}: index out of range; allowed flat indices are 0..{per_sample - 1}"
            )
        return index

    def _check_at(self, q: torch.Tensor, index: torch.Tensor, bit: Bit, bits: int) -> tuple[torch.Tensor, Bit]:
        """``index`` (one flat index per sample of ``q``) and ``bit`` (below ``bits``), checked."""
        index = self._check_index(q, index)
        n = q.shape[0]
        bit = check_bit(bit, bits, f"{self.name} metadata", q.device)
        if isinstance(bit, torch.Tensor) and bit.dim() > 0 and bit.shape != (n,):
            raise ValueError(f"{self.name}: bit has shape {tuple(bit.shape)}; expected ({n},) or an int")
        if isinstance(bit, torch.Tensor) and bit.dim() == 0:
            bit = int(bit)
        return index, bit

    @abstractmethod
    def bit_groups(self) -> dict[str, list[int]]:
        """Which bits play which role, e.g. ``{"sign": [31], "exponent": [23..30], ...}``."""

    @abstractmethod
    def describe(self) -> str:
        """One line on the values the format can hold (for tables and error messages)."""

    def with_scale(self, scale: float | torch.Tensor) -> NumberFormat:
        """This format with a fixed scale; formats without a per-tensor scale ignore it.

        Floating-point formats have no scale, fixed point has the constant 2**-F and block
        floating point takes a shared exponent from each block, so for those this returns
        ``self``: a caller can pass a profiled scale to any format.
        """
        check_scale(scale)
        return self

    def layout(self) -> str:
        """Bit ranges of each group, most significant first, e.g. ``sign 15 | exponent 14..10``."""
        parts = []
        groups = sorted(self.bit_groups().items(), key=lambda item: -max(item[1]))
        for group, bits in groups:
            hi, lo = max(bits), min(bits)
            parts.append(f"{group} {hi}" if hi == lo else f"{group} {hi}..{lo}")
        return " | ".join(parts)


def check_float_tensor(x: object, fmt: str) -> torch.Tensor:
    """``x`` as float32 on its own device, detached (formats compute values, not gradients);
    anything but a floating tensor is refused."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{fmt}: expected a torch.Tensor of floating dtype, got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{fmt}: input tensor has dtype {x.dtype}; only floating tensors are allowed "
            "(float32, float16, bfloat16, float64, ...)"
        )
    return x.detach().float()


def check_codes(codes: object, fmt: str) -> torch.Tensor:
    """``codes`` as int64; anything but an integer tensor is refused."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(
            f"{fmt}: expected an integer torch.Tensor of codes, got {type(codes).__name__}"
        )
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(
            f"{fmt}: codes have dtype {codes.dtype}; only integer tensors are allowed "
            "(int64 as returned by encode, or any other integer dtype)"
        )
    return codes.long()


def check_bit(bit: object, bits: int, fmt: str, device: torch.device | None) -> Bit:
    """``bit`` validated against 0..bits-1: a Python int, or an int64 tensor on ``device``."""
    return _check_int_or_tensor(
        bit, "bit", bits - 1, fmt, device,
        lambda bad: f"{fmt}: bit {bad} is out of range; allowed bits are 0..{bits - 1}",
    )


def _check_int_or_tensor(value: object, name: str, top: int, fmt: str, device: torch.device | None,
                         out_of_range: Callable[[int], str]) -> Union[int, torch.Tensor]:
    """A Python int or an integer tensor (made int64 on ``device``) with every value in 0..top."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{fmt}: {name} tensor has dtype {value.dtype}; only integer tensors are allowed")
        value = value.to(device=device, dtype=torch.int64)
        if value.numel() > 0:
            lo, hi = torch.stack(torch.aminmax(value)).tolist()  # one device sync
            if lo < 0 or hi > top:
                raise ValueError(out_of_range(lo if lo < 0 else hi))
        return value
    if isinstance(value, bool):
        raise TypeError(f"{fmt}: {name} must be an int or an integer tensor, got bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{fmt}: {name} must be an int or an integer tensor, got {type(value).__name__}") from None
    if not 0 <= number <= top:
        raise ValueError(out_of_range(number))
    return number


def check_scale(scale: object) -> float:
    """A scale as a positive finite float (Python number or one-element tensor)."""
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(
                "scale must be a single positive number, got a tensor of shape "
                f"{tuple(scale.shape)}"
            )
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a positive finite number, got {type(scale).__name__}")
    value = float(scale)
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {value}")
    return value


def sign_extended_mask(bit: Bit, width: int) -> Bit:
    """XOR mask that flips ``bit`` of a sign-extended ``width``-bit two's complement integer.

    For the sign bit (``width - 1``) the mask is ``-(1 << (width - 1))``: all ones from the sign
    bit up, so the result stays sign-extended and never overflows a signed view.
    """
    if isinstance(bit, torch.Tensor):
        mask = torch.bitwise_left_shift(torch.ones_like(bit), bit)
        return torch.where(bit == width - 1, torch.full_like(bit, -(1 << (width - 1))), mask)
    return -(1 << (width - 1)) if bit == width - 1 else 1 << bit


def xor_fresh(codes: torch.Tensor, mask: Bit) -> torch.Tensor:
    """``codes ^ mask``, in place when ``codes`` is a temporary the mask does not enlarge
    (callers pass only tensors they made themselves): saves a large allocation per flip."""
    if isinstance(mask, torch.Tensor):
        mask = mask.to(codes.dtype)
        if torch.broadcast_shapes(codes.shape, mask.shape) != codes.shape:
            return codes ^ mask
    return codes.bitwise_xor_(mask)


def to_signed(codes: torch.Tensor, width: int) -> torch.Tensor:
    """Low ``width`` bits of int64 ``codes`` read as a two's complement number (int64)."""
    low = codes & ((1 << width) - 1)
    return low - ((low >> (width - 1)) << width)


def to_unsigned(values: torch.Tensor, width: int) -> torch.Tensor:
    """Sign-extended int64 ``values`` as codes in the low ``width`` bits (int64)."""
    return values.long() & ((1 << width) - 1)


def check_mask(mask: object, bits: int, fmt: str, device: torch.device) -> Mask:
    """A bit mask validated against 0..2**bits-1: a Python int, or an int64 tensor on ``device``."""
    top = (1 << bits) - 1
    return _check_int_or_tensor(
        mask, "mask", top, fmt, device,
        lambda bad: f"{fmt}: mask {bad} sets bits outside the format; allowed masks are 0..{top} (bits 0..{bits - 1})",
    )


def _signed_int(mask: int, width: int) -> int:
    """The low ``width`` bits of ``mask`` read as two's complement (sign-extended mask)."""
    return mask - ((mask >> (width - 1)) << width)

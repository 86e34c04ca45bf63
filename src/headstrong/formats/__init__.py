"""Number formats: encode to bit patterns, decode, quantise and flip bits, as tensor functions.

    fmt = formats.get("bf16")          # or "fp8_e4m3", "int8", "fxp16_8", "bfp8_16", ...
    fmt.flip(x, bit)                   # bit: an int, or an integer tensor broadcast against x

Every format has ``name``, ``bits``, ``encode(x)`` (int64 codes in the low ``bits`` bits; bit 0
is the least significant), ``decode(codes)``, ``quantize(x)`` (round to nearest even, float32),
``flip(x, bit)``, ``bit_groups()`` (``{"sign": [...], "exponent": [...], "mantissa": [...]}`` for
floats, ``{"sign", "magnitude"}`` for int and fixed point, ``{"sign", "mantissa"}`` for block
formats), ``layout()`` and ``describe()``. All work on any shape and device, with no Python loop
over elements. Bad input (non-floating tensors, bits outside 0..bits-1) raises ValueError.

Scales, for the engine: ``fmt.needs_scale`` is True for int8/int16 only. Without a scale they
take ``max|x| / (2**(bits-1) - 1)`` from each tensor; a profiled scale is fixed with
``fmt.with_scale(s)`` (or ``formats.get("int8", scale=s)``), which returns a new format object.
``with_scale`` on any other format returns it unchanged (floats need none, ``fxpW_F`` has the
constant step 2**-F, ``bfpM_B`` takes an exponent from each block), so it is safe to call on all.
Mind that a per-tensor scale comes from the tensor passed: ``flip(x[idx], bit)`` on a gathered
subset would take the subset's max, so fix the whole tensor's scale first
(``fmt.with_scale(fmt.scale_for(x))``). Block formats likewise take exponents from the blocks
they are given. ``fmt.flip_at(x, index, bit)`` does it right for every format: it returns
``quantize(x)`` with, in each sample n (dimension 0), the element at flat ``index[n]`` flipped
at ``bit[n]``, taking scales and blocks from the whole ``x``.
``decode`` of int formats takes ``scale=``; of block formats, ``exponents`` from
``fmt.shared_exponents(x)``. Details in each family's module: ``floating`` (overflow rules),
``integer`` (int and fixed point), ``block``.

Beyond one flipped bit (the fault models of ``headstrong.faults.models``): ``fmt.flip_mask(x,
mask)`` XORs any per-element mask of bits, ``fmt.set_bits(x, mask, value)`` and ``fmt.stick(x,
bit, value)`` force bits to 0 or 1 and say which elements were unchanged (masked),
``fmt.flip_metadata_at(x, index, bit)`` flips the scale (int) or a block's shared exponent (bfp)
of each sample (``fmt.metadata_bits`` is 0 where a format has none), and ``bit_errors`` samples
bit errors at a rate ``p`` without one random draw per bit.
"""

# Importing the families registers them, in the order formats.list() shows them.
from headstrong.formats import floating  # noqa: F401, I001
from headstrong.formats import integer  # noqa: F401
from headstrong.formats import block  # noqa: F401
from headstrong.formats._base import NumberFormat
from headstrong.formats._registry import get, list_formats, register_family, register_format
from headstrong.formats.bit_errors import bit_error_mask, check_rate, sample_bit_errors
from headstrong.formats.block import BlockFormat
from headstrong.formats.floating import FloatFormat
from headstrong.formats.integer import FixedFormat, IntFormat

# formats.list() is the name DESIGN.md promises; it stays out of __all__ so that a star import
# never shadows the builtin.
list = list_formats  # noqa: A001

__all__ = [
    "BlockFormat",
    "FixedFormat",
    "FloatFormat",
    "IntFormat",
    "NumberFormat",
    "get",
    "list_formats",
    "register_family",
    "register_format",
    "bit_error_mask",
    "check_rate",
    "sample_bit_errors",
]

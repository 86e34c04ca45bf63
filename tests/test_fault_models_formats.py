"""Format-level edits of the fault models (masks of several bits, stuck bits, metadata flips,
bit errors at a rate), each checked against independent numpy bit manipulation."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from headstrong import formats
from test_formats import numpy_bfp  # the block floating point rule, written once in numpy

FLOATS = {  # name: (numpy dtype, unsigned view)
    "fp32": (np.float32, np.uint32),
    "fp16": (np.float16, np.uint16),
    "bf16": (ml_dtypes.bfloat16, np.uint16),
    "fp8_e4m3": (ml_dtypes.float8_e4m3fn, np.uint8),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, np.uint8),
}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal float32 bit patterns, any NaN matching any NaN."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32)))


def to_signed(codes: np.ndarray, width: int) -> np.ndarray:
    codes = codes & ((1 << width) - 1)
    return np.where(codes >= 1 << (width - 1), codes - (1 << width), codes)


def numpy_codes(values: np.ndarray, fmt: formats.NumberFormat) -> tuple[np.ndarray, object]:
    """Unsigned codes (int64) of the quantised values and what decoding needs, by numpy alone."""
    name = fmt.name
    if name in FLOATS:
        dt, ut = FLOATS[name]
        v = np.clip(values, -448, 448) if name == "fp8_e4m3" else values
        return v.astype(dt).view(ut).astype(np.int64), None
    if name.startswith("int"):
        hi = 2 ** (fmt.bits - 1) - 1
        scale = np.float32(fmt.scale)
        q = np.clip(np.round(values / scale), -hi, hi).astype(np.int64)
        return q & ((1 << fmt.bits) - 1), scale
    if name.startswith("fxp"):
        step = 2.0**-fmt.frac_bits
        q = np.clip(np.round(values / step), -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1).astype(np.int64)
        return q & ((1 << fmt.bits) - 1), step
    exps, mant, steps = numpy_bfp(values.astype(np.float64), fmt.mantissa_bits, fmt.block_size)
    return mant & ((1 << fmt.mantissa_bits) - 1), (exps, steps)


def numpy_values(codes: np.ndarray, name: str, extra: object) -> np.ndarray:
    """float32 values of unsigned codes, by numpy alone."""
    fmt = formats.get(name)
    if name in FLOATS:
        dt, ut = FLOATS[name]
        return codes.astype(ut).view(dt).astype(np.float32)
    signed = to_signed(codes, fmt.bits)
    if name.startswith("int"):
        return signed.astype(np.float32) * np.float32(extra)
    if name.startswith("fxp"):
        return (signed * extra).astype(np.float32)
    return (signed * extra[1]).astype(np.float32)


CASES = ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8", "int16", "fxp16_8", "fxp8_3", "bfp8_16", "bfp4_8"]


def data(name: str, rng: np.random.Generator) -> tuple[np.ndarray, formats.NumberFormat]:
    values = (rng.normal(0, 1, (5, 37)) * np.exp2(rng.integers(-3, 4, (5, 1)))).astype(np.float32)
    values[1, :16] = 0.0
    fmt = formats.get(name)
    if name.startswith("int"):
        fmt = fmt.with_scale(float(np.abs(values).max()) / (2 ** (fmt.bits - 1) - 1))
    return values, fmt


@pytest.mark.parametrize("name", CASES)
def test_flip_mask_matches_numpy_xor(name: str) -> None:
    rng = np.random.default_rng(11)
    values, fmt = data(name, rng)
    codes, extra = numpy_codes(values, fmt)
    masks = rng.integers(0, 1 << fmt.bits, size=values.shape, dtype=np.int64)
    masks[0] = 0  # a zero mask changes nothing
    x = torch.from_numpy(values)
    got = fmt.flip_mask(x, torch.from_numpy(masks)).numpy()
    assert same(got, numpy_values(codes ^ masks, name, extra))
    assert same(got[0], fmt.quantize(x).numpy()[0])
    for bit in (0, fmt.bits - 1):  # one bit as an int: the single flip
        assert same(fmt.flip_mask(x, 1 << bit).numpy(), fmt.flip(x, bit).numpy())


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("value", [0, 1])
def test_stick_matches_numpy_and_reports_masked(name: str, value: int) -> None:
    rng = np.random.default_rng(12 + value)
    values, fmt = data(name, rng)
    codes, extra = numpy_codes(values, fmt)
    x = torch.from_numpy(values)
    for bit in sorted({0, 1, fmt.bits // 2, fmt.bits - 2, fmt.bits - 1}):
        new = codes | (1 << bit) if value else codes & ~(1 << bit)
        got, masked = fmt.stick(x, bit, value)
        assert same(got.numpy(), numpy_values(new, name, extra)), f"bit {bit}"
        assert np.array_equal(masked.numpy(), ((codes >> bit) & 1) == value), f"bit {bit}"
        assert masked.dtype == torch.bool and masked.shape == x.shape
    bits = rng.integers(0, fmt.bits, size=values.shape)
    new = np.where(value, codes | (1 << bits), codes & ~(1 << bits))
    got, masked = fmt.stick(x, torch.from_numpy(bits), value)
    assert same(got.numpy(), numpy_values(new, name, extra))
    assert np.array_equal(masked.numpy(), ((codes >> bits) & 1) == value)


@pytest.mark.parametrize("name", ["fp32", "int8", "bfp8_16", "fxp16_8"])
def test_set_bits_of_a_mask_of_several_bits(name: str) -> None:
    rng = np.random.default_rng(14)
    values, fmt = data(name, rng)
    codes, extra = numpy_codes(values, fmt)
    masks = rng.integers(0, 1 << fmt.bits, size=values.shape, dtype=np.int64)
    for value in (0, 1):
        new = codes | masks if value else codes & ~masks
        got, masked = fmt.set_bits(torch.from_numpy(values), torch.from_numpy(masks), value)
        assert same(got.numpy(), numpy_values(new, name, extra))
        assert np.array_equal(masked.numpy(), new == codes)


def test_int_scale_metadata_flip_matches_numpy() -> None:
    rng = np.random.default_rng(15)
    values, fmt = data("int8", rng)
    codes, scale = numpy_codes(values, fmt)
    n = len(values)
    bits = np.array([0, 22, 23, 30, 31])
    got = fmt.flip_metadata_at(torch.from_numpy(values), torch.zeros(n, dtype=torch.int64), torch.from_numpy(bits))
    flipped = (np.full(n, scale, np.float32).view(np.uint32) ^ (np.uint32(1) << bits.astype(np.uint32))).view(np.float32)
    with np.errstate(over="ignore"):  # bit 30 makes the scale huge: Inf is a result
        expected = to_signed(codes, 8).astype(np.float32) * flipped[:, None]
    assert same(got.numpy(), expected)
    assert (got[4] == -fmt.quantize(torch.from_numpy(values[4]))).all()  # bit 31: the sign of the scale
    # without a fixed scale, the per-tensor scale is the one held (as float32) and flipped
    free = formats.get("int16")
    x = torch.from_numpy(values)
    s = np.float32(free.scale_for(x).item())
    got = free.flip_metadata_at(x, torch.zeros(n, dtype=torch.int64), 3)
    s3 = (np.array([s], np.float32).view(np.uint32) ^ np.uint32(8)).view(np.float32)[0]
    assert same(got.numpy(), to_signed(free.encode(x).numpy(), 16).astype(np.float32) * s3)


@pytest.mark.parametrize("name", ["bfp8_16", "bfp4_8", "bfp12_5"])
def test_block_exponent_flip_changes_the_whole_block_only(name: str) -> None:
    rng = np.random.default_rng(16)
    values, fmt = data(name, rng)
    codes, (exps, steps) = numpy_codes(values, fmt)
    m, b = fmt.mantissa_bits, fmt.block_size
    n, length = values.shape
    index = rng.integers(0, length, n)
    index[1] = 3  # an all-zero block: flipping its exponent changes nothing
    bits = np.array([0, 7, 3, 6, 1])
    got = fmt.flip_metadata_at(torch.from_numpy(values), torch.from_numpy(index), torch.from_numpy(bits)).numpy()
    new_exps = exps.copy()
    rows = np.arange(n)
    block = index // b
    new_exps[rows, block] = ((exps[rows, block] + 127) ^ (1 << bits)) - 127
    new_steps = np.exp2(np.repeat(new_exps, b, axis=1)[:, :length] - (m - 2))
    expected = (to_signed(codes, m) * new_steps).astype(np.float32)
    assert same(got, expected)
    quantized = fmt.quantize(torch.from_numpy(values)).numpy()
    hit = np.zeros_like(values, dtype=bool)
    for row in range(n):
        hit[row, block[row] * b : (block[row] + 1) * b] = True
    assert same(got[~hit], quantized[~hit])
    nonzero = hit & (quantized != 0)
    assert (got[nonzero] != quantized[nonzero]).all()


def test_block_exponent_flip_on_a_4d_tensor_hits_its_row() -> None:
    fmt = formats.get("bfp8_4")
    x = torch.arange(1, 2 * 2 * 3 * 8 + 1, dtype=torch.float32).reshape(2, 2, 3, 8)
    index = torch.tensor([13, 47])  # sample 0: row 1, positions 4..7; sample 1: row 5, 4..7
    got = fmt.flip_metadata_at(x, index, torch.tensor([0, 1]))
    q = fmt.quantize(x)
    changed = (got != q).reshape(2, -1).nonzero().tolist()
    assert changed == [[0, 12], [0, 13], [0, 14], [0, 15], [1, 44], [1, 45], [1, 46], [1, 47]]
    # block 13..16: e = 4, field 131 = 0b10000011, bit 0 flipped: e' = 3, values halve
    assert torch.equal(got.reshape(2, -1)[0, 12:16], q.reshape(2, -1)[0, 12:16] / 2)
    # block 45..48: e = 5, field 132 = 0b10000100, bit 1 flipped: e' = 7, values times 4
    assert torch.equal(got.reshape(2, -1)[1, 44:48], q.reshape(2, -1)[1, 44:48] * 4)


# ---------------------------------------------------------------- bit errors at a rate


@pytest.mark.parametrize("p", [1e-9, 1e-6, 1e-3, 0.2, 0.5])
def test_bit_error_counts_follow_the_rate(p: float) -> None:
    numel, bits, trials = 20_000, 8, 40
    total = numel * bits
    g = torch.Generator().manual_seed(0)
    counts = []
    for _ in range(trials):
        index, mask = formats.sample_bit_errors(numel, bits, p, g)
        assert torch.equal(index, index.unique())  # distinct and sorted
        assert bool((mask > 0).all()) and bool((mask < 1 << bits).all())
        counts.append(int(sum(((mask >> b) & 1).sum() for b in range(bits))))
    mean, sd = total * p, math.sqrt(total * p * (1 - p) / trials)
    assert abs(np.mean(counts) - mean) <= 5 * sd + 1e-3, (np.mean(counts), mean)


def test_bit_error_positions_are_uniform_over_bits_and_elements() -> None:
    numel, bits = 1000, 16
    g = torch.Generator().manual_seed(1)
    per_bit = np.zeros(bits)
    per_elem = np.zeros(numel)
    for _ in range(20):
        index, mask = formats.sample_bit_errors(numel, bits, 2.5e-3, g)
        for b in range(bits):
            hit = (mask >> b) & 1
            per_bit[b] += int(hit.sum())
            np.add.at(per_elem, index.numpy(), hit.numpy())
    from scipy.stats import chisquare

    assert chisquare(per_bit).pvalue > 1e-4
    assert chisquare(per_elem).pvalue > 1e-4


def test_bit_errors_are_seeded_and_edge_rates_are_exact() -> None:
    a = formats.sample_bit_errors(10_000, 32, 1e-4, torch.Generator().manual_seed(3))
    b = formats.sample_bit_errors(10_000, 32, 1e-4, torch.Generator().manual_seed(3))
    c = formats.sample_bit_errors(10_000, 32, 1e-4, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    index, mask = formats.sample_bit_errors(100, 8, 0.0)
    assert len(index) == 0 and len(mask) == 0
    index, mask = formats.sample_bit_errors(100, 8, 1.0)
    assert torch.equal(index, torch.arange(100)) and bool((mask == 255).all())
    dense = formats.bit_error_mask((4, 25), 8, 1.0)
    assert dense.shape == (4, 25) and bool((dense == 255).all())


def test_bit_errors_flip_through_flip_mask() -> None:
    fmt = formats.get("fp16")
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    mask = formats.bit_error_mask(x.shape, fmt.bits, 0.05, torch.Generator().manual_seed(0))
    got = fmt.flip_mask(x, mask).numpy()
    codes = x.numpy().astype(np.float16).view(np.uint16) ^ mask.numpy().astype(np.uint16)
    assert same(got, codes.view(np.float16).astype(np.float32))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf")])
def test_rate_outside_zero_one_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        formats.sample_bit_errors(10, 8, p)
    with pytest.raises(TypeError, match=r"p must be a number in \[0, 1\]"):
        formats.check_rate("1e-3")


def test_masks_and_values_outside_the_format_are_refused() -> None:
    fmt = formats.get("int8", scale=0.1)
    x = torch.ones(4)
    with pytest.raises(ValueError, match=r"mask 256 sets bits outside the format; allowed masks are 0..255"):
        fmt.flip_mask(x, 256)
    with pytest.raises(ValueError, match=r"mask -1 sets bits outside"):
        fmt.flip_mask(x, torch.tensor([1, -1, 0, 0]))
    with pytest.raises(TypeError, match="mask must be an int or an integer tensor"):
        fmt.flip_mask(x, 1.5)
    with pytest.raises(ValueError, match="value must be 0 or 1, got 2"):
        fmt.stick(x, 0, 2)
    with pytest.raises(ValueError, match=r"bit 8 is out of range; allowed bits are 0..7"):
        fmt.stick(x, 8, 1)


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp8_e4m3", "fxp16_8"])
def test_metadata_flip_on_a_format_without_metadata_is_refused(name: str) -> None:
    fmt = formats.get(name)
    assert fmt.metadata_bits == 0
    with pytest.raises(ValueError, match=rf"format {name} has no metadata to flip.*int8, int16.*bfpM_B"):
        fmt.flip_metadata_at(torch.ones(2, 4), torch.zeros(2, dtype=torch.int64), 0)


def test_metadata_bits_out_of_range_are_refused() -> None:
    x, index = torch.ones(2, 16), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"bfp8_16 metadata: bit 8 is out of range; allowed bits are 0..7"):
        formats.get("bfp8_16").flip_metadata_at(x, index, 8)
    with pytest.raises(ValueError, match=r"int8 metadata: bit 32 is out of range; allowed bits are 0..31"):
        formats.get("int8").flip_metadata_at(x, index, 32)
    with pytest.raises(ValueError, match=r"index out of range; allowed flat indices are 0..15"):
        formats.get("int8").flip_metadata_at(x, torch.tensor([0, 16]), 1)
    with pytest.raises(ValueError, match="at least one dimension per sample"):
        formats.get("bfp8_16").flip_metadata_at(torch.ones(4), torch.zeros(4, dtype=torch.int64), 1)


@pytest.mark.parametrize("name", CASES)
def test_apply_masks_xors_then_clears_then_sets_in_one_pass(name: str) -> None:
    rng = np.random.default_rng(17)
    values, fmt = data(name, rng)
    codes, extra = numpy_codes(values, fmt)
    top = 1 << fmt.bits
    xor, clear, setm = (rng.integers(0, top, size=values.shape, dtype=np.int64) * (rng.random(values.shape) < 0.5)
                        for _ in range(3))
    got, unchanged = fmt.apply_masks(torch.from_numpy(values), torch.from_numpy(xor), torch.from_numpy(clear),
                                     torch.from_numpy(setm))
    new = ((codes ^ xor) & ~clear) | setm
    assert same(got.numpy(), numpy_values(new, name, extra))
    assert np.array_equal(unchanged.numpy(), new == codes)
    # an int8 code flipped to -128 stays -128: no re-quantising between the steps
    if name == "int8":
        x = torch.tensor([[-1.0 * fmt.scale * 127, 0.0]])
        out, _ = fmt.apply_masks(x, torch.tensor([[0b00000001, 0]]), 0, 0)  # -127 ^ 1 = -128
        assert out[0, 0].item() == pytest.approx(-128 * fmt.scale)

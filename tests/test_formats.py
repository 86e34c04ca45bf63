"""Number formats checked bit for bit against independent oracles (numpy views, ml_dtypes, hand
tables, numpy re-implementations of the integer and block rules), plus their error messages."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headstrong import formats
from headstrong.cli.main import app

FLOATS = {  # name: (oracle dtype, unsigned view of the same width)
    "fp32": (np.float32, np.uint32),
    "fp16": (np.float16, np.uint16),
    "bf16": (ml_dtypes.bfloat16, np.uint16),
    "fp8_e4m3": (ml_dtypes.float8_e4m3fn, np.uint8),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, np.uint8),
}
ALL = formats.list()
EXTRA = ["fxp8_3", "fxp24_12", "bfp4_8", "bfp12_5", "bfp8_1"]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal float32 bit patterns, any NaN matching any NaN."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32)))


def representable(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Finite values of the format, as float32: random (or all) bit patterns plus the edges:
    zeros, smallest and largest subnormals, smallest normal, largest finite, and negatives."""
    dt, ut = FLOATS[name]
    width = np.dtype(ut).itemsize * 8
    if width <= 16:
        codes = np.arange(1 << width, dtype=np.uint64).astype(ut)
        codes = codes if width == 8 else rng.choice(codes, size=n, replace=False)
    else:
        codes = rng.integers(0, 1 << width, size=n, dtype=np.uint64).astype(ut)
    info = ml_dtypes.finfo(dt)
    edges = np.array(
        [0.0, float(info.smallest_subnormal), float(info.smallest_normal) - float(info.smallest_subnormal),
         float(info.smallest_normal), float(info.max), 1.0],
        dtype=np.float64,
    )
    edges = np.concatenate([edges, -edges]).astype(dt)
    values = np.concatenate([codes.view(dt), edges]).astype(np.float32)
    return values[np.isfinite(values)]


def unrepresentable(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """float32 values to round: log-spread over the format's range (subnormals too), signed,
    plus exact ties halfway between neighbouring values of the format."""
    dt, _ = FLOATS[name]
    info = ml_dtypes.finfo(dt)
    lo, hi = np.log2(float(info.smallest_subnormal)), np.log2(float(info.max))
    mags = np.exp2(rng.uniform(lo, hi, size=n))
    spread = (mags * rng.choice([-1.0, 1.0], size=n)).astype(np.float32)
    grid = np.sort(representable(name, 4096, rng).astype(np.float64))
    grid = np.unique(grid)
    ties = ((grid[:-1] + grid[1:]) / 2).astype(np.float32)
    values = np.concatenate([spread, ties])
    return values[np.abs(values) <= float(info.max)]


def oracle_flip(values: np.ndarray, name: str, bit: np.ndarray | int) -> np.ndarray:
    dt, ut = FLOATS[name]
    codes = values.astype(dt).view(ut)
    return (codes ^ (np.ones_like(codes) << np.asarray(bit).astype(ut))).view(dt).astype(np.float32)


# ---------------------------------------------------------------- registry and names


def test_list_has_every_design_name() -> None:
    expected = ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8", "int16", "fxp16_8", "bfp8_16"]
    assert formats.list() == expected
    for name in expected:
        fmt = formats.get(name)
        assert fmt.name == name
    assert [formats.get(n).bits for n in expected] == [32, 16, 16, 8, 8, 8, 16, 16, 8]


def test_parametric_names_parse() -> None:
    fxp = formats.get("fxp12_4")
    assert (fxp.name, fxp.bits, fxp.frac_bits) == ("fxp12_4", 12, 4)
    bfp = formats.get("BFP6_32")
    assert (bfp.name, bfp.bits, bfp.block_size) == ("bfp6_32", 6, 32)
    assert formats.get(fxp) is fxp


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown format 'bf61'; expected one of fp32, fp16, bf16") as info:
        formats.get("bf61")
    assert "fxpW_F" in str(info.value) and "bfpM_B" in str(info.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fxp16", "malformed format name 'fxp16'; expected fxpW_F"),
        ("fxp16_x", "expected fxpW_F"),
        ("bfp8", "malformed format name 'bfp8'; expected bfpM_B"),
        ("bfp_8_16", "expected bfpM_B"),
        ("fxp40_8", "W=40 is outside 2..24"),
        ("fxp1_0", "W=1 is outside 2..24"),
        ("fxp8_8", "F=8 is outside 0..7"),
        ("bfp1_16", "M=1 is outside 2..24"),
        ("bfp8_0", "B=0 is outside 1..65536"),
    ],
)
def test_malformed_parametric_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        formats.get(name)


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="'fp32' takes no parameters; got scale"):
        formats.get("fp32", scale=0.1)
    with pytest.raises(ValueError, match="'int8' takes only scale; got bits"):
        formats.get("int8", bits=4)
    with pytest.raises(ValueError, match="positive finite"):
        formats.get("int8", scale=-1.0)
    with pytest.raises(TypeError, match="format must be a name"):
        formats.get(8)


# ---------------------------------------------------------------- floats against the oracles


@pytest.mark.parametrize("name", FLOATS)
def test_float_quantize_and_encode_match_oracle(name: str) -> None:
    rng = np.random.default_rng(1)
    dt, ut = FLOATS[name]
    values = np.concatenate([representable(name, 3000, rng), unrepresentable(name, 3000, rng)])
    fmt = formats.get(name)
    x = torch.from_numpy(values)
    assert same(fmt.quantize(x).numpy(), values.astype(dt).astype(np.float32))
    codes = fmt.encode(x)
    assert codes.dtype == torch.int64
    assert np.array_equal(codes.numpy(), values.astype(dt).view(ut).astype(np.int64))


@pytest.mark.parametrize("name", FLOATS)
def test_float_flip_every_bit_matches_oracle(name: str) -> None:
    rng = np.random.default_rng(2)
    values = representable(name, 3000, rng)
    fmt = formats.get(name)
    x = torch.from_numpy(values)
    for bit in range(fmt.bits):
        assert same(fmt.flip(x, bit).numpy(), oracle_flip(values, name, bit)), f"bit {bit}"
    bits = rng.integers(0, fmt.bits, size=values.shape)
    assert same(fmt.flip(x, torch.from_numpy(bits)).numpy(), oracle_flip(values, name, bits))


@pytest.mark.parametrize("name", FLOATS)
def test_float_decode_matches_oracle_and_round_trips(name: str) -> None:
    rng = np.random.default_rng(3)
    dt, ut = FLOATS[name]
    width = np.dtype(ut).itemsize * 8
    if width <= 16:
        codes = np.arange(1 << width, dtype=np.int64)
    else:
        codes = rng.integers(0, 1 << 32, size=5000, dtype=np.int64)
    fmt = formats.get(name)
    decoded = fmt.decode(torch.from_numpy(codes))
    assert decoded.dtype == torch.float32
    assert same(decoded.numpy(), codes.astype(ut).view(dt).astype(np.float32))
    finite = torch.isfinite(decoded) | torch.isinf(decoded)  # every pattern that is not NaN
    assert torch.equal(fmt.encode(decoded[finite]), torch.from_numpy(codes)[finite])


def test_fp32_bit_30_of_one_is_infinity_as_the_oracle_says() -> None:
    oracle = (np.array([1.0], np.float32).view(np.uint32) ^ np.uint32(1 << 30)).view(np.float32)
    assert np.isposinf(oracle[0])
    flipped = formats.get("fp32").flip(torch.tensor([1.0]), 30)
    assert same(flipped.numpy(), oracle)


@pytest.mark.parametrize("name", FLOATS)
def test_float_sign_bit_negates(name: str) -> None:
    values = representable(name, 500, np.random.default_rng(4))
    fmt = formats.get(name)
    x = torch.from_numpy(values)
    assert same(fmt.flip(x, fmt.bits - 1).numpy(), -values)


def test_fp8_e4m3_saturates_and_flips_into_nan() -> None:
    fmt = formats.get("fp8_e4m3")
    big = torch.tensor([460.0, 1e6, float("inf"), -1e6, float("-inf"), float("nan")])
    assert same(fmt.quantize(big).numpy(), np.array([448, 448, 448, -448, -448, np.nan], np.float32))
    # 448 is S.1111.110: flipping bit 0 gives the NaN pattern, returned as a value
    assert torch.isnan(fmt.flip(torch.tensor([448.0, -448.0]), 0)).all()
    oracle = np.array([448.0, -448.0], np.float32).astype(ml_dtypes.float8_e4m3fn)
    assert np.isnan((oracle.view(np.uint8) ^ np.uint8(1)).view(ml_dtypes.float8_e4m3fn).astype(np.float32)).all()


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8_e5m2"])
def test_ieee_like_formats_overflow_to_infinity_like_the_oracle(name: str) -> None:
    dt, _ = FLOATS[name]
    values = np.array([1e5, -1e5, 3.4e38, -3.4e38, np.inf, np.nan], np.float32)
    with np.errstate(over="ignore"):
        expected = values.astype(dt).astype(np.float32)
    assert same(formats.get(name).quantize(torch.from_numpy(values)).numpy(), expected)


def test_float_inputs_of_other_dtypes_and_shapes() -> None:
    fmt = formats.get("bf16")
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    before = x.clone()
    out = fmt.flip(x, 3)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.equal(x, before)
    assert fmt.quantize(torch.tensor(2.5, dtype=torch.float16)).item() == 2.5
    # one bit per sample, broadcast over the rest
    bits = torch.tensor([0, 7, 15]).view(3, 1, 1)
    out = fmt.flip(x, bits)
    for i, b in enumerate([0, 7, 15]):
        assert torch.equal(out[i], fmt.flip(x[i], b))
    xt = x.transpose(0, 2)  # non-contiguous input
    assert torch.equal(fmt.flip(xt, 2), fmt.flip(xt.contiguous(), 2))


# ---------------------------------------------------------------- int8 / int16 against numpy


def numpy_int(values: np.ndarray, bits: int, scale: float | None, bit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(codes in the low bits, decoded float32 values), flipped at ``bit`` if given: float64
    arithmetic with the per-tensor scale, float32 with a given one (as the docs promise)."""
    qmax = 2 ** (bits - 1) - 1
    if scale is None:
        v = values.astype(np.float64)
        amax = np.abs(v[np.isfinite(v)]).max()
        scale = amax / qmax if amax > 0 else 1.0
    else:
        v, scale = values.astype(np.float32), np.float32(scale)
    with np.errstate(invalid="ignore"):
        q = np.clip(np.round(np.nan_to_num(v / scale, nan=0.0, posinf=qmax, neginf=-qmax)), -qmax, qmax)
    signed, unsigned = {8: (np.int8, np.uint8), 16: (np.int16, np.uint16)}[bits]
    codes = q.astype(signed).view(unsigned)
    if bit is not None:
        codes = codes ^ unsigned(1 << bit)
    return codes.astype(np.int64), (codes.view(signed).astype(v.dtype) * scale).astype(np.float32)


@pytest.mark.parametrize(("name", "bits"), [("int8", 8), ("int16", 16)])
@pytest.mark.parametrize("scale", [None, 0.013])
def test_int_every_bit_matches_numpy(name: str, bits: int, scale: float | None) -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(0, 1, 2000), [0.0, -0.0, 5.0, -5.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    fmt = formats.get(name, scale=scale)
    x = torch.from_numpy(values)
    codes, decoded = numpy_int(values, bits, scale)
    assert np.array_equal(fmt.encode(x).numpy(), codes)
    assert same(fmt.quantize(x).numpy(), decoded)
    assert same(fmt.decode(fmt.encode(x), scale=fmt.scale_for(x)).numpy(), decoded)
    for bit in range(bits):
        assert same(fmt.flip(x, bit).numpy(), numpy_int(values, bits, scale, bit)[1]), f"bit {bit}"


def test_int_saturates_and_uses_a_given_scale() -> None:
    fmt = formats.get("int8", scale=0.25)
    x = torch.tensor([100.0, -100.0, 0.125, 0.375, float("nan"), float("-inf")])
    # 100 saturates at code 127; 0.5 and 1.5 steps are ties, to even; NaN -> 0; -Inf saturates
    assert fmt.quantize(x).tolist() == [31.75, -31.75, 0.0, 0.5, 0.0, -31.75]
    assert fmt.encode(x).tolist() == [127, 129, 0, 2, 0, 129]
    # the sign bit of two's complement: +0.25 (code 1) becomes code -127
    assert fmt.flip(torch.tensor([0.25]), 7).item() == -31.75
    assert fmt.flip(torch.tensor([0.0]), 7).item() == -32.0  # code -128
    assert fmt.decode(torch.tensor([0x80, 0x7F])).tolist() == [-32.0, 31.75]


def test_int_scale_handling() -> None:
    fmt = formats.get("int8")
    assert fmt.needs_scale and fmt.scale is None
    x = torch.tensor([2.54, -1.0])
    assert fmt.scale_for(x).item() == pytest.approx(0.02)
    fixed = fmt.with_scale(0.5)
    assert fixed.scale == 0.5 and fmt.scale is None and fixed.name == "int8"
    assert fixed.quantize(x).tolist() == [2.5, -1.0]
    assert formats.get("int8").quantize(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="int8 has no fixed scale"):
        fmt.decode(torch.tensor([1]))
    with pytest.raises(ValueError, match="positive finite number, got 0.0"):
        fmt.with_scale(0.0)
    fp = formats.get("fp16")
    assert fp.with_scale(3.0) is fp and not fp.needs_scale
    given = formats.get("int16", scale=0.0123)
    assert given.scale == float(np.float32(0.0123))  # applied, and kept, as float32
    q = given.quantize(torch.randn(1000, generator=torch.Generator().manual_seed(11)) * 100)
    assert torch.equal(given.quantize(q), q)
    with pytest.raises(ValueError, match="not a positive finite float32"):
        formats.get("int8", scale=1e-50)


# ---------------------------------------------------------------- fixed point: Q8.8 by hand


def test_fxp16_8_is_q8_8() -> None:
    fmt = formats.get("fxp16_8")
    x = torch.tensor([1.0, -1.0, 0.5, 1 / 512, 3 / 512, 200.0, -200.0, -128.0, 127.99609375])
    assert fmt.encode(x).tolist() == [0x0100, 0xFF00, 0x0080, 0, 2, 0x7FFF, 0x8000, 0x8000, 0x7FFF]
    assert fmt.quantize(x).tolist() == [1.0, -1.0, 0.5, 0.0, 2 / 256, 127.99609375, -128.0, -128.0, 127.99609375]
    assert fmt.decode(torch.tensor([0x7FFF, 0x8000, 0xFFFF, 0x0001])).tolist() == [127.99609375, -128.0, -1 / 256, 1 / 256]
    one = torch.tensor([1.0])
    assert fmt.flip(one, 15).item() == -127.0  # sign bit: 0x8100
    assert fmt.flip(one, 8).item() == 0.0
    assert fmt.flip(one, 0).item() == 1.0 + 1 / 256
    assert fmt.bit_groups() == {"sign": [15], "magnitude": list(range(15))}
    assert fmt.with_scale(0.3) is fmt and not fmt.needs_scale


def test_fixed_point_every_bit_matches_numpy() -> None:
    fmt = formats.get("fxp12_5")
    values = np.random.default_rng(6).uniform(-70, 70, 1000).astype(np.float32)
    q = np.clip(np.round(values.astype(np.float64) * 32), -2048, 2047).astype(np.int64)
    assert np.array_equal(fmt.encode(torch.from_numpy(values)).numpy(), q & 0xFFF)
    for bit in range(12):
        flipped = (q & 0xFFF) ^ (1 << bit)
        expected = np.where(flipped >= 2048, flipped - 4096, flipped) / 32
        assert np.array_equal(fmt.flip(torch.from_numpy(values), bit).numpy(), expected.astype(np.float32))


# ---------------------------------------------------------------- block floating point


def numpy_bfp(values: np.ndarray, m: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exponents per block, signed mantissas, steps) for a 2-D array, written from the rule."""
    rows, length = values.shape
    blocks = -(-length // b)
    padded = np.zeros((rows, blocks * b))
    padded[:, :length] = np.abs(values)
    amax = padded.reshape(rows, blocks, b).max(axis=2)
    exps = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1.0))), -126).astype(np.int64)
    steps = np.exp2(np.repeat(exps, b, axis=1)[:, :length] - (m - 2))
    mant = np.clip(np.round(values / steps), 1 - 2 ** (m - 1), 2 ** (m - 1) - 1).astype(np.int64)
    return exps, mant, steps


@pytest.mark.parametrize("name", ["bfp8_16", "bfp4_8", "bfp12_5", "bfp8_1"])
def test_block_matches_numpy_on_every_bit(name: str) -> None:
    fmt = formats.get(name)
    m, b = fmt.mantissa_bits, fmt.block_size
    rng = np.random.default_rng(7)
    values = (rng.normal(0, 1, (6, 37)) * np.exp2(rng.integers(-20, 20, (6, 1)))).astype(np.float32)
    values[1, :16] = 0.0  # all-zero block(s)
    values[2, 3] = 1e-40  # subnormal
    exps, mant, steps = numpy_bfp(values.astype(np.float64), m, b)
    x = torch.from_numpy(values)
    assert np.array_equal(fmt.shared_exponents(x).numpy(), exps)
    assert np.array_equal(fmt.encode(x).numpy(), mant & ((1 << m) - 1))
    assert np.array_equal(fmt.quantize(x).numpy(), (mant * steps).astype(np.float32))
    assert torch.equal(fmt.decode(fmt.encode(x), fmt.shared_exponents(x)), fmt.quantize(x))
    for bit in range(m):
        flipped = (mant & ((1 << m) - 1)) ^ (1 << bit)
        signed = np.where(flipped >= 2 ** (m - 1), flipped - 2**m, flipped)
        assert np.array_equal(fmt.flip(x, bit).numpy(), (signed * steps).astype(np.float32)), f"bit {bit}"


def test_block_by_hand() -> None:
    fmt = formats.get("bfp8_4")
    x = torch.tensor([[1.0, 0.5, -0.25, 3.0, 1 / 64, 3 / 64, 0.0, 1.0, 3.999, -3.999]])
    # blocks [1, .5, -.25, 3] -> e=1, step 1/32; [1/64, 3/64, 0, 1] -> e=0, step 1/64;
    # [3.999, -3.999] -> e=1, step 1/32: ±127.97 saturates to ±127
    assert fmt.shared_exponents(x).tolist() == [[1, 0, 1]]
    assert fmt.quantize(x).tolist() == [[1.0, 0.5, -0.25, 3.0, 1 / 64, 3 / 64, 0.0, 1.0, 127 / 32, -127 / 32]]
    y = torch.tensor([1.0, 1 / 128, 3 / 128, 0.0])  # e=0, step 1/64: ties 0.5 -> 0, 1.5 -> 2
    assert fmt.encode(y).tolist() == [64, 0, 2, 0]
    # each element's flip depends on its own bit alone: the block's exponent stays
    bits = torch.tensor([[6, 0, 3, 7, 6, 1, 5, 2, 0, 4]])
    single = fmt.flip(x, bits)
    for bit in range(8):
        chosen = bits == bit
        assert torch.equal(single[chosen], fmt.flip(x, bit)[chosen])
    assert fmt.flip(x, 6)[0, 3] == 1.0  # 3.0 is mantissa 96 (step 1/32); bit 6 clear: 32
    assert fmt.flip(torch.zeros(4), 6).tolist() == [2.0**-126] * 4  # zero block: e = -126


@pytest.mark.parametrize("name", ["bfp8_4", "fp16", "int8"])
def test_bit_tensors_that_enlarge_the_result(name: str) -> None:
    fmt = formats.get(name)
    x = torch.tensor([[0.3], [-2.0], [5.0]])  # one value per row: rows are one-value blocks
    bits = torch.tensor([[0, 1, 2, 7]])  # enlarges the last dimension, 1 -> 4
    out = fmt.flip(x, bits)
    assert out.shape == (3, 4)
    for j, b in enumerate([0, 1, 2, 7]):
        assert torch.equal(out[:, j : j + 1], fmt.flip(x, b))
    y = torch.randn(3, 9, generator=torch.Generator().manual_seed(13))
    stacked = fmt.flip(y, torch.tensor([3, 5]).view(2, 1, 1))  # adds a leading dimension
    assert torch.equal(stacked[0], fmt.flip(y, 3)) and torch.equal(stacked[1], fmt.flip(y, 5))


def test_block_extremes_of_float32() -> None:
    values = np.array([[1e-45, 0.0, 3e-45, 1e-44], [3.4e38, -1.0, 1e38, 0.0], [0.0] * 4], np.float32)
    for name in ("bfp24_4", "bfp3_2"):
        fmt = formats.get(name)
        exps, mant, steps = numpy_bfp(values.astype(np.float64), fmt.mantissa_bits, fmt.block_size)
        x = torch.from_numpy(values)
        assert np.array_equal(fmt.shared_exponents(x).numpy(), exps)
        assert np.array_equal(fmt.quantize(x).numpy(), (mant * steps).astype(np.float32))
    assert formats.get("bfp24_4").quantize(x)[0, 0].item() == float(np.float32(1e-45))
    assert formats.get("bfp8_2").decode(torch.tensor(5), torch.tensor([3])).shape == ()


def test_block_decode_checks_exponents() -> None:
    fmt = formats.get("bfp8_16")
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2\), one per block of 16"):
        fmt.decode(torch.zeros(3, 20, dtype=torch.int64), torch.zeros(3, 3, dtype=torch.int64))
    assert fmt.with_scale(2.0) is fmt and not fmt.needs_scale
    assert fmt.quantize(torch.tensor(0.3)).shape == ()


# ---------------------------------------------------------------- every format


@pytest.mark.parametrize("name", ALL + EXTRA)
def test_quantize_is_idempotent_and_round_trips(name: str) -> None:
    fmt = formats.get(name)
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(4, 50, generator=gen) * torch.logspace(-3, 2, 50)
    q = fmt.quantize(x)
    assert q.dtype == torch.float32 and q.shape == x.shape
    assert torch.equal(fmt.quantize(q), q)
    codes = fmt.encode(x)
    assert codes.dtype == torch.int64 and int(codes.min()) >= 0 and int(codes.max()) < 2**fmt.bits
    if isinstance(fmt, formats.BlockFormat):
        decoded = fmt.decode(codes, fmt.shared_exponents(x))
    elif isinstance(fmt, formats.IntFormat):
        decoded = fmt.decode(codes, scale=fmt.scale_for(x))
    else:
        decoded = fmt.decode(codes)
    assert torch.equal(decoded, q)


@pytest.mark.parametrize("name", ALL + EXTRA)
def test_bit_groups_cover_every_bit_once(name: str) -> None:
    fmt = formats.get(name)
    groups = fmt.bit_groups()
    assert groups["sign"] == [fmt.bits - 1]
    assert sorted(b for bits in groups.values() for b in bits) == list(range(fmt.bits))
    assert fmt.layout().startswith(f"sign {fmt.bits - 1} | ")


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_name_what_is_allowed(name: str) -> None:
    fmt = formats.get(name)
    x = torch.ones(4)
    last = fmt.bits - 1
    for bad in (fmt.bits, -1):
        with pytest.raises(ValueError, match=rf"bit {bad} is out of range; allowed bits are 0\.\.{last}"):
            fmt.flip(x, bad)
    with pytest.raises(ValueError, match=rf"bit {fmt.bits + 3} is out of range; allowed bits are 0\.\.{last}"):
        fmt.flip(x, torch.tensor([0, fmt.bits + 3, 1, 2]))
    with pytest.raises(ValueError, match=rf"bit -2 is out of range; allowed bits are 0\.\.{last}"):
        fmt.flip(x, torch.tensor([[-2], [1]]))
    for method in (fmt.quantize, fmt.encode, lambda t: fmt.flip(t, 0)):
        with pytest.raises(ValueError, match=r"dtype torch\.int32; only floating tensors are allowed"):
            method(torch.ones(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="bit must be an int or an integer tensor, got float"):
        fmt.flip(x, 1.0)
    with pytest.raises(TypeError, match="only integer tensors"):
        fmt.flip(x, torch.tensor([1.0]))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        fmt.quantize([1.0, 2.0])
    assert fmt.flip(x, np.int64(0)).shape == x.shape
    assert fmt.flip(torch.ones(0), torch.zeros(0, dtype=torch.int64)).shape == (0,)


def test_decode_refuses_floating_codes() -> None:
    with pytest.raises(ValueError, match="only integer tensors are allowed"):
        formats.get("fp16").decode(torch.ones(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL + EXTRA)
def test_cuda_matches_cpu(name: str) -> None:
    fmt = formats.get(name)
    x = torch.randn(8, 33, generator=torch.Generator().manual_seed(9)) * 10
    bits = torch.randint(0, fmt.bits, (8, 1), generator=torch.Generator().manual_seed(10))
    out = fmt.flip(x.cuda(), bits.cuda())
    assert out.device.type == "cuda"
    assert same(out.cpu().numpy(), fmt.flip(x, bits).numpy())
    assert torch.equal(fmt.encode(x.cuda()).cpu(), fmt.encode(x))


# ---------------------------------------------------------------- the command


def test_cli_lists_every_format() -> None:
    result = CliRunner().invoke(app, ["formats"])
    assert result.exit_code == 0, result.output
    for name in ALL:
        assert name in result.output
    assert "30..23" in result.output  # fp32's exponent


def test_cli_shows_each_flip_of_a_value() -> None:
    result = CliRunner().invoke(app, ["formats", "bf16", "--value", "1.0"])
    assert result.exit_code == 0, result.output
    assert "0011111110000000" in result.output  # 1.0 in bf16, 0x3F80
    assert "0x3F80" in result.output
    assert "inf" in result.output  # bit 14 turns 1.0 into +Inf
    assert "-1" in result.output  # bit 15 negates
    result = CliRunner().invoke(app, ["formats", "int8", "--value", "0.5", "--scale", "0.25"])
    assert result.exit_code == 0, result.output
    assert "00000010" in result.output and "-31.5" in result.output  # code 2, sign flip -> -126


def test_cli_rejects_an_unknown_format() -> None:
    result = CliRunner().invoke(app, ["formats", "bf61"])
    assert result.exit_code != 0
    assert "unknown format 'bf61'" in result.output


# ---------------------------------------------------------------- one element per sample


@pytest.mark.parametrize("name", ALL + ["bfp4_8"])
def test_flip_at_hits_one_element_per_sample(name: str) -> None:
    fmt = formats.get(name)
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(5, 3, 7, generator=gen) * 4
    index = torch.tensor([0, 20, 7, 13, 5])
    bits = torch.randint(0, fmt.bits, (5,), generator=gen)
    out = fmt.flip_at(x, index, bits)
    q = fmt.quantize(x)
    for n in range(5):  # the slow way: flip the whole tensor, keep one element
        expected = q[n].flatten().clone()
        expected[index[n]] = fmt.flip(x, int(bits[n]))[n].flatten()[index[n]]
        assert same(out[n].flatten().numpy(), expected.numpy())
    assert same(fmt.flip_at(x, index, 0).numpy(), fmt.flip_at(x, index, torch.zeros(5, dtype=torch.int64)).numpy())


def test_flip_at_checks_its_arguments() -> None:
    fmt = formats.get("fp16")
    x = torch.ones(4, 6)
    with pytest.raises(ValueError, match=r"index has shape \(3,\); expected \(4,\)"):
        fmt.flip_at(x, torch.zeros(3, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match=r"allowed flat indices are 0\.\.5"):
        fmt.flip_at(x, torch.tensor([0, 1, 6, 2]), 0)
    with pytest.raises(ValueError, match=r"bit has shape \(2,\); expected \(4,\)"):
        fmt.flip_at(x, torch.zeros(4, dtype=torch.int64), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"allowed bits are 0\.\.15"):
        fmt.flip_at(x, torch.zeros(4, dtype=torch.int64), torch.tensor([1, 2, 3, 16]))
    with pytest.raises(TypeError, match="index must be an integer tensor"):
        fmt.flip_at(x, torch.zeros(4), 0)
    empty = torch.ones(0, 6)
    assert fmt.flip_at(empty, torch.zeros(0, dtype=torch.int64), 1).shape == (0, 6)


@pytest.mark.parametrize("name", ALL)
def test_results_are_new_tensors_without_history(name: str) -> None:
    fmt = formats.get(name)
    w = torch.nn.Parameter(torch.randn(4, 6))
    before = w.detach().clone()
    outputs = [fmt.quantize(w), fmt.flip(w, 1), fmt.encode(w), fmt.flip_at(w, torch.arange(4), 2)]
    for out in outputs:
        assert not out.requires_grad
        out.zero_()  # writing to a result must never reach the input
    assert torch.equal(w.detach(), before)

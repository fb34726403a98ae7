"""Pure fault and noise models: bit-exact checks on float32 patterns and two's-complement codes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec
from crosslayer.resilience.faults import (
    FLOAT32,
    WordFormat,
    apply_word_mask,
    ber_masks,
    code_format,
    flip_bits,
    from_words,
    gaussian_noise,
    random_fault_sites,
    sample_distinct,
    stuck_bits,
    to_words,
    uniform_noise,
)

INT8 = WordFormat("int", 8, True)
UINT8 = WordFormat("int", 8, False)


def test_float_sign_and_exponent_flips_are_bit_exact() -> None:
    x = torch.tensor([1.5, -2.0, 0.0])
    assert flip_bits(x, FLOAT32, torch.tensor([0]), 31).tolist() == [-1.5, -2.0, 0.0]
    # bit 30 is the exponent MSB: 1.5 = 0x3FC00000 -> 0x7FC00000 is a NaN, 0.0 -> 2.0
    out = flip_bits(x, FLOAT32, torch.tensor([0, 2]), 30)
    assert torch.isnan(out[0]) and out[2].item() == 2.0
    assert flip_bits(x, FLOAT32, torch.tensor([1]), 23).tolist() == [1.5, -4.0, 0.0]  # exponent 128 -> 129
    assert x.tolist() == [1.5, -2.0, 0.0]  # input untouched


def test_twos_complement_code_flips() -> None:
    codes = torch.tensor([5, -1, 127, -128], dtype=torch.int32)
    assert flip_bits(codes, INT8, torch.tensor([0]), 7).tolist() == [5 - 128, -1, 127, -128]
    assert flip_bits(codes, INT8, torch.tensor([1]), 0).tolist() == [5, -2, 127, -128]
    assert flip_bits(codes, INT8, torch.tensor([2, 3]), 7).tolist() == [5, -1, -1, 0]
    assert flip_bits(torch.tensor([3], dtype=torch.int32), UINT8, torch.tensor([0]), 7).tolist() == [131]
    # several bits of one element, and a pair listed twice cancels
    assert flip_bits(codes, INT8, torch.tensor([0, 0]), torch.tensor([0, 1])).tolist()[0] == 6
    assert flip_bits(codes, INT8, torch.tensor([0, 0]), torch.tensor([2, 2])).tolist()[0] == 5


def test_binary_codes_flip_sign() -> None:
    fmt = code_format(FixedPointSpec(bits=1, scheme="binary"))
    out = flip_bits(torch.tensor([1, -1], dtype=torch.int32), fmt, torch.tensor([0, 1]), 0)
    assert out.tolist() == [-1, 1]


def test_stuck_at() -> None:
    codes = torch.tensor([5, -1], dtype=torch.int32)
    assert stuck_bits(codes, INT8, torch.tensor([0, 1]), 7, 1).tolist() == [5 - 128, -1]
    assert stuck_bits(codes, INT8, torch.tensor([0, 1]), 0, 0).tolist() == [4, -2]
    assert stuck_bits(torch.tensor([1.0]), FLOAT32, torch.tensor([0]), 31, 1).tolist() == [-1.0]
    with pytest.raises(ConfigError, match="0 or 1"):
        stuck_bits(codes, INT8, torch.tensor([0]), 0, 2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-128, 127), min_size=1, max_size=20), st.integers(0, 7))
def test_code_flip_is_an_involution_within_range(vals: list[int], bit: int) -> None:
    codes = torch.tensor(vals, dtype=torch.int32)
    idx = torch.arange(len(vals))
    once = flip_bits(codes, INT8, idx, bit)
    assert int(once.min()) >= -128 and int(once.max()) <= 127
    assert torch.equal(flip_bits(once, INT8, idx, bit), codes)
    assert torch.equal(from_words(to_words(codes, INT8), INT8), codes)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=10))
def test_float_words_round_trip(vals: list[float]) -> None:
    x = torch.tensor(vals, dtype=torch.float32)
    w = to_words(x, FLOAT32)
    assert int(w.min()) >= 0 and int(w.max()) < 2**32
    assert torch.equal(from_words(w, FLOAT32).view(torch.int32), x.view(torch.int32))


def test_bad_bit_and_ber_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="beyond the 8-bit word"):
        flip_bits(torch.zeros(3, dtype=torch.int32), INT8, torch.tensor([0]), 8)
    with pytest.raises(ConfigError, match="beyond the 32-bit word"):
        flip_bits(torch.zeros(3), FLOAT32, torch.tensor([0]), 32)
    with pytest.raises(ConfigError, match=r"allowed \[0, 1\]"):
        ber_masks(10, INT8, 1.5, torch.Generator())
    with pytest.raises(ConfigError, match="element index"):
        flip_bits(torch.zeros(3), FLOAT32, torch.tensor([3]), 0)


def test_random_sites_distinct_and_seeded() -> None:
    a = random_fault_sites(1000, INT8, 500, torch.Generator().manual_seed(1))
    b = random_fault_sites(1000, INT8, 500, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    pairs = a[0] * 8 + a[1]
    assert pairs.unique().numel() == 500 and int(a[1].max()) <= 7
    sparse = sample_distinct(10**9, 1000, torch.Generator().manual_seed(0))
    assert sparse.unique().numel() == 1000 and int(sparse.max()) < 10**9
    only = random_fault_sites(50, INT8, 20, torch.Generator().manual_seed(0), bits=(7,))
    assert set(only[1].tolist()) == {7}
    with pytest.raises(ConfigError, match="distinct faults"):
        random_fault_sites(2, INT8, 17, torch.Generator())


def test_ber_masks_count_follows_the_rate() -> None:
    g = torch.Generator().manual_seed(0)
    n = 20000
    masks = ber_masks(n, INT8, 0.01, g)
    ones = int(((masks[:, None] >> torch.arange(8)) & 1).sum())
    expected = n * 8 * 0.01
    assert abs(ones - expected) < 5 * expected**0.5  # binomial, 5 sigma
    assert int(ber_masks(n, INT8, 0.0, g).abs().sum()) == 0
    assert bool((ber_masks(100, INT8, 1.0, g) == 255).all())


def test_apply_word_mask_modes() -> None:
    codes = torch.tensor([0b0101, -1], dtype=torch.int32)
    m = torch.tensor([0b0011, 0b1])
    assert apply_word_mask(codes, INT8, m, "flip").tolist() == [0b0110, -2]
    assert apply_word_mask(codes, INT8, m, "stuck0").tolist() == [0b0100, -2]
    assert apply_word_mask(codes, INT8, m, "stuck1").tolist() == [0b0111, -1]
    st_ = apply_word_mask(codes, INT8, m, "stuck", torch.Generator().manual_seed(0))
    assert (st_[0].item() & ~0b11) == 0b0100  # only masked bits may change
    with pytest.raises(ConfigError, match="needs a generator"):
        apply_word_mask(codes, INT8, m, "stuck")


def test_noise_is_seeded_and_scaled() -> None:
    x = torch.randn(20000, generator=torch.Generator().manual_seed(0)) * 3
    a = gaussian_noise(x, 0.5, torch.Generator().manual_seed(7))
    b = gaussian_noise(x, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert float((a - x).std()) == pytest.approx(0.5 * float(x.std()), rel=0.05)
    u = uniform_noise(x, 0.1, torch.Generator().manual_seed(1), relative=False)
    assert float((u - x).abs().max()) <= 0.1 + 1e-6
    with pytest.raises(ConfigError, match=">= 0"):
        gaussian_noise(x, -1.0, torch.Generator())

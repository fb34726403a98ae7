"""The fixed-point core: ranges, scales, Qm.n, round trips and the straight-through gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crosslayer.errors import ConfigError
from crosslayer.quant import (
    FixedPointSpec,
    dequantize,
    fake_quantize,
    qformat,
    qrange,
    quantize_tensor,
    round_to_codes,
    scale_for,
)


def test_qrange_signed_and_unsigned() -> None:
    assert qrange(8) == (-128, 127)
    assert qrange(4, signed=False) == (0, 15)
    assert qrange(16) == (-32768, 32767)


@pytest.mark.parametrize("bits", [0, 17, -3])
def test_bits_outside_1_16_rejected(bits: int) -> None:
    with pytest.raises(ConfigError, match=r"bits = .* out of range; allowed \[1, 16\]"):
        FixedPointSpec(bits=bits)


def test_one_bit_uniform_rejected_binary_accepted() -> None:
    with pytest.raises(ConfigError, match="scheme = 'binary'"):
        FixedPointSpec(bits=1)
    assert FixedPointSpec(bits=1, scheme="binary").bits == 1
    with pytest.raises(ConfigError, match="needs bits = 2"):
        FixedPointSpec(bits=3, scheme="ternary")


def test_qformat_scale_and_saturation() -> None:
    spec = qformat(3, 4)  # Q3.4: sign + 3 integer + 4 fraction bits
    assert spec.bits == 8 and spec.int_bits == 3 and spec.frac_bits == 4
    x = torch.tensor([0.0, 1.0625, -2.53, 100.0, -100.0])
    scale, zp = scale_for(x, spec)
    assert float(scale) == pytest.approx(1 / 16)
    codes = round_to_codes(x, scale, zp, spec.bits)
    assert codes.tolist() == [0, 17, -40, 127, -128]
    assert dequantize(codes, scale, zp).tolist() == pytest.approx([0.0, 1.0625, -2.5, 7.9375, -8.0])


def test_qm_n_needs_symmetric() -> None:
    with pytest.raises(ConfigError, match="frac_bits"):
        FixedPointSpec(bits=8, symmetric=False, frac_bits=4)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 16), symmetric=st.booleans(), seed=st.integers(0, 10_000))
def test_round_trip_error_is_at_most_half_a_step(bits: int, symmetric: bool, seed: int) -> None:
    x = torch.randn(64, generator=torch.Generator().manual_seed(seed)) * 3
    spec = FixedPointSpec(bits=bits, symmetric=symmetric)
    qt = quantize_tensor(x, spec)
    lo, hi = qrange(bits)
    assert int(qt.codes.min()) >= lo and int(qt.codes.max()) <= hi
    err = (qt.dequantize() - x).abs().max()
    assert float(err) <= float(qt.scale) / 2 + 1e-6


def test_zero_is_exact_in_asymmetric_and_symmetric() -> None:
    x = torch.tensor([0.0, 0.3, 1.7, 2.9, -0.4])
    for spec in (FixedPointSpec(bits=4, symmetric=False, signed=False), FixedPointSpec(bits=3)):
        assert float(quantize_tensor(x, spec).dequantize()[0]) == 0.0
        assert float(fake_quantize(x, spec)[0]) == 0.0


def test_per_channel_scales_follow_each_row() -> None:
    w = torch.tensor([[1.0, -0.5], [10.0, 5.0], [0.1, 0.05]])
    qt = quantize_tensor(w, FixedPointSpec(bits=8, per_channel=True, channel_axis=0))
    assert qt.scale.shape == (3, 1)
    assert qt.scale.flatten().tolist() == pytest.approx([1 / 127, 10 / 127, 0.1 / 127])
    assert qt.codes[:, 0].tolist() == [127, 127, 127]


def test_fake_quantize_straight_through_gradient() -> None:
    x = torch.tensor([0.1, 0.5, 3.0], requires_grad=True)
    spec = FixedPointSpec(bits=4, frac_bits=2)  # range [-2, 1.75]: 3.0 saturates
    y = fake_quantize(x, spec)
    assert y.tolist() == pytest.approx([0.0, 0.5, 1.75])
    y.sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [1.0, 1.0, 0.0]

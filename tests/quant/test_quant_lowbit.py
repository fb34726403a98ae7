"""Binary (XNOR-Net) and ternary (TWN) weights under the fixed-point contract."""

from __future__ import annotations

import pytest
import torch

from crosslayer.quant import FixedPointSpec, fake_quantize, quantize_tensor
from crosslayer.quant.lowbit import binary_codes, ternary_codes


def test_xnor_binary_alpha_is_mean_abs_per_output_channel() -> None:
    w = torch.tensor([[0.5, -1.5, 1.0], [-0.2, 0.2, 0.8]])
    codes, alpha = binary_codes(w, per_channel=True)
    assert codes.tolist() == [[1, -1, 1], [-1, 1, 1]]
    assert alpha.flatten().tolist() == pytest.approx([1.0, 0.4])


def test_binary_keeps_pruned_zeros() -> None:
    w = torch.tensor([[0.0, -2.0, 1.0, 0.0]])
    qt = quantize_tensor(w, FixedPointSpec(bits=1, scheme="binary", per_channel=True))
    assert qt.codes.tolist() == [[0, -1, 1, 0]]
    assert float(qt.scale) == pytest.approx(1.5)  # mean |W| over the kept weights
    assert qt.dequantize().tolist() == [[0.0, -1.5, 1.5, 0.0]]


def test_twn_threshold_and_scale() -> None:
    w = torch.tensor([1.0, -1.0, 0.2, -0.1, 0.7, 0.0])
    codes, alpha = ternary_codes(w, per_channel=False)
    # E|W| over non-zeros = 3.0 / 5 = 0.6; delta = 0.42: 1.0, -1.0, 0.7 survive
    assert codes.tolist() == [1, -1, 0, 0, 1, 0]
    assert float(alpha) == pytest.approx(0.9)


def test_ternary_spec_codes_and_fake_agree() -> None:
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    spec = FixedPointSpec(bits=2, scheme="ternary", per_channel=True)
    qt = quantize_tensor(w, spec)
    assert set(qt.codes.unique().tolist()) <= {-1, 0, 1}
    assert qt.scale.shape == (8, 1, 1, 1)
    torch.testing.assert_close(fake_quantize(w, spec), qt.dequantize())


def test_low_bit_straight_through_gradients() -> None:
    w = torch.tensor([0.3, -0.8, 1.5], requires_grad=True)
    fake_quantize(w, FixedPointSpec(bits=1, scheme="binary")).sum().backward()
    assert w.grad is not None and w.grad.tolist() == [1.0, 1.0, 0.0]  # cancelled where |w| > 1
    w.grad = None
    fake_quantize(w, FixedPointSpec(bits=2, scheme="ternary")).sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0]

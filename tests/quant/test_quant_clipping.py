"""Calibration clipping ranges: min/max, percentile and MSE-optimal."""

from __future__ import annotations

import pytest
import torch

from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec
from crosslayer.quant.clipping import minmax_range, mse_range, percentile_range, quantization_mse


def test_percentile_range_of_a_ramp() -> None:
    x = torch.arange(10001, dtype=torch.float32)
    lo, hi = percentile_range(x, 99.0)
    assert lo == pytest.approx(100.0) and hi == pytest.approx(9900.0)
    with pytest.raises(ConfigError, match="percentile"):
        percentile_range(x, 40.0)


def test_mse_clipping_beats_minmax_on_heavy_tails() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20000, generator=g), torch.tensor([40.0, -35.0])])
    spec = FixedPointSpec(bits=4)
    lo, hi = mse_range(x, spec)
    mlo, mhi = minmax_range(x)
    assert hi < mhi / 2 and lo > mlo / 2
    assert quantization_mse(x, spec, lo, hi) < 0.5 * quantization_mse(x, spec, mlo, mhi)


def test_mse_clipping_keeps_range_at_high_precision() -> None:
    x = torch.linspace(-1, 1, 5001)
    lo, hi = mse_range(x, FixedPointSpec(bits=12))
    assert hi == pytest.approx(1.0, abs=0.02) and lo == pytest.approx(-1.0, abs=0.02)

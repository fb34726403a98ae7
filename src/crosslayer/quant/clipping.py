"""Clipping ranges for calibration, as pure functions of sampled activation values.

- ``minmax``: the observed range (Jacob et al., CVPR 2018).
- ``percentile``: the ``p``-th and ``(100 - p)``-th percentiles, ignoring rare outliers
  (McKinstry et al., "Discovering Low-Precision Networks Close to Full-Precision Networks for
  Efficient Embedded Inference", 2018; Wu et al., "Integer Quantization for Deep Learning Inference", 2020).
- ``mse``: the range, shrunk from the observed one, that minimises the mean squared error between
  the values and their fake-quantized copies (Banner et al., ACIQ, NeurIPS 2019; Sung et al., 2015).

Hand-written rather than ``torch.ao.quantization`` observers: those only support codes of at most
8 bits, while this toolkit quantizes to any width from 2 to 16 bits.
"""

from __future__ import annotations

import torch

from crosslayer.config import check_range
from crosslayer.quant.fixed_point import FixedPointSpec, fake_quantize, scale_for

__all__ = ["minmax_range", "mse_range", "percentile_range", "quantization_mse"]


def minmax_range(samples: torch.Tensor) -> tuple[float, float]:
    """Smallest and largest value."""
    return float(samples.min()), float(samples.max())


def percentile_range(samples: torch.Tensor, percentile: float = 99.99) -> tuple[float, float]:
    """The ``(100 - p)``-th and ``p``-th percentiles of ``samples`` (``p`` in (50, 100])."""
    check_range("percentile", percentile, 50.0, 100.0, lo_open=True)
    x = samples.detach().float().flatten()
    q = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0], dtype=torch.float32)
    lo, hi = torch.quantile(x, q).tolist()
    return float(lo), float(hi)


def quantization_mse(samples: torch.Tensor, spec: FixedPointSpec, lo: float, hi: float) -> float:
    """Mean squared error of fake-quantizing ``samples`` with the range ``[lo, hi]``."""
    x = samples.detach().float().flatten()
    scale, zp = scale_for(x[:1], spec, torch.tensor(lo), torch.tensor(hi))
    err = fake_quantize(x, spec, scale.reshape(()), zp.reshape(())) - x
    return float((err * err).mean())


def mse_range(samples: torch.Tensor, spec: FixedPointSpec, grid: int = 50,
              min_ratio: float = 0.2) -> tuple[float, float]:
    """The range ``r * [lo, hi]`` (``r`` on a grid from ``min_ratio`` to 1) with the least quantization MSE.
    """
    check_range("grid", grid, 2)
    check_range("min_ratio", min_ratio, 0.0, 1.0, lo_open=True, hi_open=True)
    lo, hi = minmax_range(samples)
    best = (quantization_mse(samples, spec, lo, hi), lo, hi)
    for r in torch.linspace(min_ratio, 1.0, grid)[:-1].tolist():
        err = quantization_mse(samples, spec, lo * r, hi * r)
        if err < best[0]:
            best = (err, lo * r, hi * r)
    return best[1], best[2]

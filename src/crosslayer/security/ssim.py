"""Differentiable SSIM and correlation coefficient (batched torch), for losses that must stay imperceptible.

SSIM after Wang, Bovik, Sheikh and Simoncelli, "Image Quality Assessment: From Error Visibility to
Structural Similarity", IEEE TIP 2004, computed the way ``skimage.metrics.structural_similarity``
does by default (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03, mean over the valid
region), so that the loss optimises the same number the reports show. Hand-written because
scikit-image's version is NumPy-only and cannot be differentiated.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["correlation", "ssim"]


def ssim(a: torch.Tensor, b: torch.Tensor, *, win: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM of (N, C, H, W) tensors, channels averaged."""
    c = a.shape[1]
    k = torch.ones(c, 1, win, win, dtype=a.dtype, device=a.device) / (win * win)
    conv = lambda t: F.conv2d(t, k, groups=c)  # noqa: E731
    cov_norm = win * win / (win * win - 1)
    ua, ub = conv(a), conv(b)
    vaa = cov_norm * (conv(a * a) - ua * ua)
    vbb = cov_norm * (conv(b * b) - ub * ub)
    vab = cov_norm * (conv(a * b) - ua * ub)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (vaa + vbb + c2))
    # skimage filters at full size and then crops (win - 1) // 2 on each side: the 'valid' conv here
    return s.flatten(1).mean(1)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation coefficient of the flattened images."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)

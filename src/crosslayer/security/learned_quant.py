"""Learned quantization thresholds for QuSecNets-style input quantization (Khalid et al., IOLTS 2019).

The hard staircase has no useful gradient, so thresholds are trained through a soft staircase,
``sum_i sigmoid((x - t_i) / temperature) / (L - 1)``, minimising the classifier's cross-entropy on
FGSM examples of the undefended model (the classifier stays frozen). The learned thresholds are then
used with the hard :class:`~crosslayer.security.transforms.InputQuantization`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.config import check_range
from crosslayer.security.base import frozen
from crosslayer.security.fgsm import fgsm

__all__ = ["learn_thresholds"]


def learn_thresholds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, levels: int = 2, eps: float = 0.2,
                     steps: int = 100, lr: float = 0.01, temperature: float = 0.02, batch_size: int = 256,
                     seed: int = 0) -> torch.Tensor:
    """Thresholds (``levels - 1`` values in (0, 1), sorted) that keep the model right on FGSM-perturbed inputs."""
    check_range("levels", levels, 2)
    check_range("steps", steps, 1)
    check_range("temperature", temperature, 0.0, lo_open=True)
    gen = torch.Generator().manual_seed(seed)
    with frozen(model):
        adv = torch.cat([fgsm(model, x[i:i + 1000], y[i:i + 1000], eps) for i in range(0, len(x), 1000)])
        pool_x = torch.cat([x, adv])
        pool_y = torch.cat([y, y])
        t = ((torch.arange(1, levels, dtype=torch.float32) - 0.5) / (levels - 1)).requires_grad_(True)
        opt = torch.optim.Adam([t], lr=lr)
        for _ in range(steps):
            idx = torch.randint(len(pool_x), (min(batch_size, len(pool_x)),), generator=gen)
            xb = pool_x[idx]
            soft = torch.sigmoid((xb.unsqueeze(-1) - t) / temperature).sum(-1) / (levels - 1)
            loss = F.cross_entropy(model(soft), pool_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                t.clamp_(0.01, 0.99)
    return t.detach().sort().values

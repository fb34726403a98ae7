"""An imperceptible targeted attack in the spirit of TrISec: Khalid, Hanif, Rehman, Qadir and
Shafique, "TrISec: Training Data-Unaware Imperceptible Security Attacks on Deep Neural Networks",
IEEE IOLTS 2019.

Gradient descent (Adam) on a perturbation of the test image only (no training data) towards a target
class, under two perceptibility constraints, SSIM >= ``min_ssim`` and correlation coefficient >=
``min_corr`` with the clean image, enforced by hinge penalties in the loss through the differentiable
SSIM of :mod:`crosslayer.security.ssim`. Per image the result is the adversarial point reaching the
target while meeting both constraints with the highest SSIM (else the clean image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.config import Config, check_range
from crosslayer.security.registry import register_attack
from crosslayer.security.ssim import correlation, ssim

__all__ = ["TrISecConfig", "trisec"]


@dataclass(frozen=True, kw_only=True)
class TrISecConfig(Config):
    """Defaults: SSIM >= 0.9, correlation >= 0.95, 200 Adam steps at lr 0.01, penalty weight 10."""

    min_ssim: float = 0.9
    min_corr: float = 0.95
    steps: int = 200
    lr: float = 0.01
    penalty: float = 10.0

    def validate(self) -> None:
        check_range("min_ssim", self.min_ssim, -1.0, 1.0)
        check_range("min_corr", self.min_corr, -1.0, 1.0)
        check_range("steps", self.steps, 1)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("penalty", self.penalty, 0.0)


def trisec(model: nn.Module, x: torch.Tensor, target: torch.Tensor, cfg: TrISecConfig,
           gen: torch.Generator) -> torch.Tensor:
    """Targeted adversarial images keeping SSIM and correlation with ``x`` above the configured floors."""
    x = x.detach()
    # a tiny seeded start breaks the zero-gradient symmetry of SSIM at delta = 0
    delta = (1e-3 * torch.randn(x.shape, generator=gen)).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    best = x.clone()
    best_ssim = torch.full((len(x),), -2.0, device=x.device)
    for _ in range(cfg.steps):
        adv = (x + delta).clamp(0.0, 1.0)
        logits = model(adv)
        s, r = ssim(x, adv), correlation(x, adv)
        loss = (F.cross_entropy(logits, target, reduction="none")
                + cfg.penalty * (F.relu(cfg.min_ssim - s) + F.relu(cfg.min_corr - r))).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            ok = (logits.argmax(1) == target) & (s >= cfg.min_ssim) & (r >= cfg.min_corr) & (s > best_ssim)
            best[ok] = adv.detach()[ok]
            best_ssim = torch.where(ok, s.detach(), best_ssim)
    return best


@register_attack("trisec", TrISecConfig, "targeted attack under SSIM and correlation floors (TrISec, 2019)",
                 targeted=True)
def _trisec(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrISecConfig, gen: torch.Generator,
            target: torch.Tensor | None) -> tuple[torch.Tensor, None]:
    assert target is not None  # run_attack supplies default targets for targeted attacks
    return trisec(model, x, target, cfg, gen), None

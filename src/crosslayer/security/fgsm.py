"""FGSM: Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.

One signed-gradient step of size ``eps`` on the cross-entropy, clipped to the input range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.config import Config
from crosslayer.security.base import check_eps, input_grad_only
from crosslayer.security.registry import register_attack

__all__ = ["FGSMConfig", "fgsm"]


@dataclass(frozen=True, kw_only=True)
class FGSMConfig(Config):
    """``eps``: L-inf budget in pixel units ([0, 1] inputs); default 0.1."""

    eps: float = 0.1

    def validate(self) -> None:
        check_eps(self.eps, "linf")


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         target: torch.Tensor | None = None) -> torch.Tensor:
    """``clip(x + eps * sign(grad_x CE(model(x), y)))``; with ``target``, a step down the target's loss."""
    x_in = x.detach().requires_grad_(True)  # a new leaf sharing x's storage (x itself is left alone)
    with input_grad_only(model):
        loss = F.cross_entropy(model(x_in), target if target is not None else y)
        (grad,) = torch.autograd.grad(loss, x_in)
    step = -eps if target is not None else eps
    return grad.sign_().mul_(step).add_(x).clamp_(0.0, 1.0)


@register_attack("fgsm", FGSMConfig, "fast gradient sign method, one L-inf step (Goodfellow et al., 2015)")
def _fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: FGSMConfig, gen: torch.Generator,
          target: torch.Tensor | None) -> tuple[torch.Tensor, None]:
    return fgsm(model, x, y, cfg.eps, target=target), None

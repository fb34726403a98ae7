"""PGD: Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

Projected gradient ascent on the cross-entropy inside an L-inf or L2 ball, from a uniformly random
start in the ball, with restarts (per image the first successful restart is kept, else the one with
the highest loss). ``eot_samples > 1`` averages gradients over that many forward passes:
Expectation over Transformation (Athalye et al., ICML 2018) against randomised defences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.config import Config, check_range
from crosslayer.security.base import check_eps, check_norm, input_grad_only
from crosslayer.security.registry import register_attack

__all__ = ["PGDConfig", "pgd"]


@dataclass(frozen=True, kw_only=True)
class PGDConfig(Config):
    """Defaults: L-inf, eps 0.3, 40 steps of ``alpha = 2.5 * eps / steps`` (Madry et al.), 1 restart."""

    eps: float = 0.3
    norm: Literal["linf", "l2"] = "linf"
    steps: int = 40
    alpha: float = 0.0  # step size; 0 = 2.5 * eps / steps
    random_start: bool = True
    restarts: int = 1
    eot_samples: int = 1

    def validate(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps, self.norm)  # the L2 upper bound is checked on the images
        check_range("steps", self.steps, 1)
        check_range("alpha", self.alpha, 0.0)
        check_range("restarts", self.restarts, 1)
        check_range("eot_samples", self.eot_samples, 1)

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha > 0 else 2.5 * self.eps / self.steps


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        noise = torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1
        return (x + eps * noise).clamp(0.0, 1.0)
    # uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d)
    d = x[0].numel()
    g = torch.randn(x.shape, generator=gen).to(x.device)
    r = torch.rand(len(x), generator=gen).to(x.device).pow(1.0 / d).view(-1, *([1] * (x.dim() - 1)))
    return (x + eps * r * g / _flat_norm(g)).clamp(0.0, 1.0)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)
    d = x_adv - x
    d = d * (eps / _flat_norm(d)).clamp(max=1.0)
    return (x + d).clamp_(0.0, 1.0)


def _one_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PGDConfig, norm: str, gen: torch.Generator,
             target: torch.Tensor | None) -> torch.Tensor:
    x_adv = _random_start(x, cfg.eps, norm, gen) if cfg.random_start and cfg.eps > 0 else x.clone()
    alpha, sign = cfg.step_size, (-1.0 if target is not None else 1.0)
    goal = target if target is not None else y
    if norm == "linf":  # the projection onto the ball and the input range in one clamp: [max(x-eps, 0), min(x+eps, 1)]
        lo, hi = (x - cfg.eps).clamp_(min=0.0), (x + cfg.eps).clamp_(max=1.0)
    for _ in range(cfg.steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), goal)
        for _ in range(cfg.eot_samples - 1):
            loss = loss + F.cross_entropy(model(x_adv), goal)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach()  # the graph is gone: the step updates the buffer in place
        with torch.no_grad():
            if norm == "linf":
                x_adv.add_(grad.sign_(), alpha=sign * alpha).clamp_(min=lo, max=hi)
            else:
                x_adv = _project(x_adv.add_(grad.div_(_flat_norm(grad)), alpha=sign * alpha), x, cfg.eps, norm)
    return x_adv


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PGDConfig, *, gen: torch.Generator | None = None,
        target: torch.Tensor | None = None) -> torch.Tensor:
    """PGD adversarial examples for ``x`` (model frozen by the caller or not: gradients flow to inputs only)."""
    norm = check_norm(cfg.norm)
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    with input_grad_only(model):
        return _pgd_runs(model, x, y, cfg, norm, gen, target)


def _pgd_runs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PGDConfig, norm: str, gen: torch.Generator,
              target: torch.Tensor | None) -> torch.Tensor:
    best = _one_run(model, x, y, cfg, norm, gen, target)
    if cfg.restarts == 1:
        return best
    with torch.no_grad():
        logits = model(best)
        done = logits.argmax(1) == target if target is not None else logits.argmax(1) != y
        best_loss = F.cross_entropy(logits, y, reduction="none")
    for _ in range(cfg.restarts - 1):
        if bool(done.all()):
            break
        cand = _one_run(model, x, y, cfg, norm, gen, target)
        with torch.no_grad():
            logits = model(cand)
            ok = logits.argmax(1) == target if target is not None else logits.argmax(1) != y
            loss = F.cross_entropy(logits, y, reduction="none")
            take = ~done & (ok | (loss > best_loss))
            best = torch.where(take.view(-1, 1, 1, 1), cand, best)
            best_loss = torch.where(take, loss, best_loss)
            done = done | ok
    return best


@register_attack("pgd", PGDConfig, "projected gradient descent, L-inf or L2, random start, restarts (Madry 2018)")
def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PGDConfig, gen: torch.Generator,
         target: torch.Tensor | None) -> tuple[torch.Tensor, None]:
    return pgd(model, x, y, cfg, gen=gen, target=target), None

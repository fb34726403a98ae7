"""Carlini-Wagner L2: Carlini and Wagner, "Towards Evaluating the Robustness of Neural Networks",
IEEE S&P 2017.

Minimise ``||x' - x||_2^2 + c * f(x')`` over ``x' = (tanh(w) + 1) / 2`` (box constraint by change of
variables) with Adam, ``f = max(Z_y - max_{j != y} Z_j, -kappa)`` (untargeted) or
``max(max_{j != t} Z_j - Z_t, -kappa)`` (targeted); ``c`` found per image by binary search. Keeps the
smallest successful perturbation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.security.registry import register_attack

__all__ = ["CWConfig", "cw_l2"]


@dataclass(frozen=True, kw_only=True)
class CWConfig(Config):
    """Defaults: c0 = 1, 5 binary-search steps of 100 Adam steps at lr 0.05, kappa = 0."""

    c: float = 1.0
    kappa: float = 0.0
    steps: int = 100
    search_steps: int = 5
    lr: float = 0.05

    def validate(self) -> None:
        check_range("c", self.c, 0.0, lo_open=True)
        check_range("kappa", self.kappa, 0.0)
        check_range("steps", self.steps, 1)
        check_range("search_steps", self.search_steps, 1)
        check_range("lr", self.lr, 0.0, lo_open=True)


def _margin(logits: torch.Tensor, label: torch.Tensor, targeted: bool) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(label, logits.shape[1]).bool()
    own = logits[onehot]
    other = logits.masked_fill(onehot, float("-inf")).amax(1)
    return other - own if targeted else own - other


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: CWConfig, *,
          target: torch.Tensor | None = None) -> torch.Tensor:
    """The smallest-L2 adversarial example found per image (``x`` itself where none was found)."""
    targeted = target is not None
    label = target if target is not None else y
    n = len(x)
    lo = torch.zeros(n, device=x.device)
    hi = torch.full((n,), float("inf"), device=x.device)
    c = torch.full((n,), cfg.c, device=x.device)
    best_l2 = torch.full((n,), float("inf"), device=x.device)
    best = x.detach().clone()
    # 1e-3 from the box edge, not 1e-6: tanh saturates there and black/white pixels (most of MNIST) could
    # not move within a few hundred Adam steps; the start shifts by at most 5e-4 per pixel
    w0 = torch.atanh((x.detach() * 2 - 1).clamp(-1 + 1e-3, 1 - 1e-3))
    for _ in range(cfg.search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.lr)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(cfg.steps):
            adv = (torch.tanh(w) + 1) / 2
            logits = model(adv)
            l2 = (adv - x).flatten(1).pow(2).sum(1)
            f = _margin(logits, label, targeted).clamp_min(-cfg.kappa)
            loss = (l2 + c * f).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                pred = logits.argmax(1)
                ok = pred == label if targeted else pred != label
                better = ok & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best[better] = adv.detach()[better]
                found |= ok
        with torch.no_grad():  # binary search on c: smaller after success, larger after failure
            hi = torch.where(found, torch.minimum(hi, c), hi)
            lo = torch.where(found, lo, torch.maximum(lo, c))
            c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
    return best


@register_attack("cw", CWConfig, "Carlini-Wagner L2, tanh box, binary search on c (Carlini & Wagner, 2017)")
def _cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: CWConfig, gen: torch.Generator,
        target: torch.Tensor | None) -> tuple[torch.Tensor, None]:
    return cw_l2(model, x, y, cfg, target=target), None

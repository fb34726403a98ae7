"""JSMA: Papernot, McDaniel, Jha, Fredrikson, Celik and Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016.

Targeted L0 attack: at each iteration the Jacobian of the logits gives, for every pixel pair, how
much raising it helps the target (``alpha``) and hurts the others (``beta``); the pair maximising
``alpha * |beta|`` with ``alpha > 0, beta < 0`` is raised by ``theta``. Stops at the target class or
after changing ``gamma`` of the pixels. Batched: all images advance together, finished ones stay put.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.security.registry import register_attack

__all__ = ["JSMAConfig", "jsma"]


@dataclass(frozen=True, kw_only=True)
class JSMAConfig(Config):
    """``theta``: change per chosen pixel (+1 saturates it); ``gamma``: largest fraction of pixels changed."""

    theta: float = 1.0
    gamma: float = 0.1

    def validate(self) -> None:
        check_range("theta", self.theta, -1.0, 1.0)
        if self.theta == 0:
            raise ConfigError("theta = 0 changes nothing; allowed [-1, 0) or (0, 1]")
        check_range("gamma", self.gamma, 0.0, 1.0, lo_open=True)


def _saliency(x: torch.Tensor, model: nn.Module, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.detach().requires_grad_(True)
    logits = model(xr)
    t_logit = logits.gather(1, target[:, None]).sum()
    (g_t,) = torch.autograd.grad(t_logit, xr, retain_graph=True)
    (g_all,) = torch.autograd.grad(logits.sum(), xr)
    return g_t.flatten(1), (g_all - g_t).flatten(1)


def jsma(model: nn.Module, x: torch.Tensor, target: torch.Tensor, cfg: JSMAConfig) -> torch.Tensor:
    """Targeted JSMA adversarial examples (pixel pairs, increasing or decreasing by ``theta``)."""
    d = x[0].numel()
    adv = x.detach().flatten(1).clone()
    increase = cfg.theta > 0
    # search domain: pixels that can still move in the attack's direction
    domain = adv < 1.0 if increase else adv > 0.0
    max_iter = max(1, int(cfg.gamma * d / 2))
    eye = torch.eye(d, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        with torch.no_grad():
            active = model(adv.view_as(x)).argmax(1) != target
        active &= domain.sum(1) >= 2
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        alpha, beta = _saliency(adv[idx].view(-1, *x.shape[1:]), model, target[idx])
        if not increase:
            alpha, beta = -alpha, -beta
        a = alpha[:, :, None] + alpha[:, None, :]
        b = beta[:, :, None] + beta[:, None, :]
        dom = domain[idx]
        valid = (a > 0) & (b < 0) & dom[:, :, None] & dom[:, None, :] & ~eye
        score = torch.where(valid, a * b.abs(), torch.zeros((), device=x.device))
        best = score.flatten(1).argmax(1)
        has = valid.flatten(1).any(1)
        p, q = best // d, best % d
        rows = idx[has]
        p, q = p[has], q[has]
        for col in (p, q):
            adv[rows, col] = (adv[rows, col] + cfg.theta).clamp(0.0, 1.0)
            domain[rows, col] = False
        domain[idx[~has]] = False  # no valid pair left: give up on that image
    return adv.view_as(x)


@register_attack("jsma", JSMAConfig, "Jacobian saliency map attack, targeted L0 (Papernot et al., 2016)",
                 targeted=True)
def _jsma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: JSMAConfig, gen: torch.Generator,
          target: torch.Tensor | None) -> tuple[torch.Tensor, None]:
    assert target is not None  # run_attack supplies default targets for targeted attacks
    out = []
    for i in range(0, len(x), 16):  # pair scores are (batch, d, d) floats: keep memory bounded
        out.append(jsma(model, x[i:i + 16], target[i:i + 16], cfg))
    return torch.cat(out), None

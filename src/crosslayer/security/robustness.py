"""Robust accuracy versus epsilon for several models on the same images (the cross-layer view).

Each model is attacked white-box with its own gradients. A model whose forward pass gives no input
gradient (e.g. a non-differentiable approximate-multiplier emulation) is attacked by transfer from the
first differentiable model instead, and reported as such: a transfer attack is weaker, so its curve
is an upper bound on robustness.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from crosslayer.errors import ConfigError
from crosslayer.security.base import check_eps, check_inputs, frozen
from crosslayer.security.fgsm import FGSMConfig
from crosslayer.security.pgd import PGDConfig
from crosslayer.security.registry import run_attack

__all__ = ["RobustnessCurves", "has_input_gradient", "robustness_curves"]

log = logging.getLogger(__name__)


@dataclass
class RobustnessCurves:
    eps: list[float]
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    transferred: list[str] = field(default_factory=list)


def has_input_gradient(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the model's logits give a non-zero, finite gradient with respect to its input."""
    try:
        with frozen(model):
            xr = x[:8].detach().clone().requires_grad_(True)
            out = model(xr)
            if not out.requires_grad:
                return False
            (g,) = torch.autograd.grad(out.logsumexp(1).sum(), xr)
    except RuntimeError:
        return False
    return bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0


def robustness_curves(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps: Sequence[float], *,
                      attack: str = "pgd", steps: int = 10, seed: int = 0) -> RobustnessCurves:
    """Accuracy of every model under ``attack`` ("fgsm" or "pgd", L-inf) at each ``eps``."""
    if attack not in ("fgsm", "pgd"):
        raise ConfigError(f"attack = {attack!r} is not allowed for robustness curves; choose 'fgsm' or 'pgd'")
    if not models:
        raise ConfigError("no models to compare")
    for e in eps:
        check_eps(e, "linf")
    for m in models.values():
        check_inputs(m, x, y)
    grads = {name: has_input_gradient(m, x) for name, m in models.items()}
    source = next((n for n, ok in grads.items() if ok), None)
    if source is None:
        raise ConfigError("none of the models gives input gradients; white-box attacks are impossible")
    out = RobustnessCurves(eps=[float(e) for e in eps])
    for e in eps:
        cfg: FGSMConfig | PGDConfig = FGSMConfig(eps=e) if attack == "fgsm" else PGDConfig(eps=e, steps=steps)
        transfer_adv = None
        for name, m in models.items():
            if e == 0:
                with frozen(m), torch.no_grad():
                    dev = next((p.device for p in m.parameters()), torch.device("cpu"))
                    acc = float((m(x.to(dev)).argmax(1).cpu() == y).float().mean())
            elif grads[name]:
                res = run_attack(m, x, y, cfg, seed=seed, with_ssim=False)
                acc = res.metrics["robust_accuracy"]
                if name == source:
                    transfer_adv = res.adv
            else:
                if transfer_adv is None:
                    transfer_adv = run_attack(models[source], x, y, cfg, seed=seed, with_ssim=False).adv
                with frozen(m), torch.no_grad():
                    dev = next((p.device for p in m.parameters()), torch.device("cpu"))
                    acc = float((m(transfer_adv.to(dev)).argmax(1).cpu() == y).float().mean())
                if name not in out.transferred:
                    out.transferred.append(name)
            out.accuracy.setdefault(name, []).append(acc)
            log.info("robustness %s eps %.3f: %.4f", name, e, acc)
    return out

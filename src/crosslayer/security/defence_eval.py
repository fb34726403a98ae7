"""Evaluate an input defence twice: against the attacker who does not know it and an adaptive one.

Following Athalye, Carlini and Wagner (ICML 2018), robustness is never claimed from the first number
alone: the *non-adaptive* attacker crafts examples on the bare model and they are then fed through the
defence; the *adaptive* attacker attacks ``Defended(transform, model)`` end to end, with BPDA through
non-differentiable transforms and Expectation over Transformation (``eot_samples`` gradient samples)
when the transform is random.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from crosslayer.security.base import check_inputs
from crosslayer.security.pgd import PGDConfig
from crosslayer.security.registry import run_attack
from crosslayer.security.transforms import Defended, InputTransform, bpda

__all__ = ["evaluate_defence"]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        model.eval()
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        return float((model(x.to(dev)).argmax(1).cpu() == y).float().mean())


def evaluate_defence(model: nn.Module, transform: InputTransform, x: torch.Tensor, y: torch.Tensor, attack: Any, *,
                     seed: int = 0, eot_samples: int = 8) -> dict[str, float]:
    """Clean and robust accuracy (fractions) of ``model`` without and with ``transform``.

    Keys: ``clean_accuracy``, ``defended_clean_accuracy``, ``undefended_robust_accuracy`` (attack on the
    bare model), ``nonadaptive_robust_accuracy`` (those examples through the defence),
    ``adaptive_robust_accuracy`` (BPDA/EOT attack on the defended model).
    """
    check_inputs(model, x, y)
    defended = Defended(transform, model)
    base = run_attack(model, x, y, attack, seed=seed, with_ssim=False)
    adaptive_cfg = attack
    if transform.random and isinstance(attack, PGDConfig):
        adaptive_cfg = dataclasses.replace(attack, eot_samples=eot_samples)
    with bpda(defended):
        adaptive = run_attack(defended, x, y, adaptive_cfg, seed=seed, with_ssim=False)
    return {
        "clean_accuracy": _accuracy(model, x, y),
        "defended_clean_accuracy": _accuracy(defended, x, y),
        "undefended_robust_accuracy": base.metrics["robust_accuracy"],
        "nonadaptive_robust_accuracy": _accuracy(defended, base.adv, y),
        "adaptive_robust_accuracy": _accuracy(defended, adaptive.adv, y),
    }

"""One verb for every attack: a frozen config per attack, a registry from config type to handler.

``run_attack(model, x, y, cfg, seed=...)`` validates the inputs, runs the attack batched under
:func:`crosslayer.security.base.frozen`, and scores the result (:func:`summarize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crosslayer.config import from_mapping
from crosslayer.errors import ConfigError
from crosslayer.security.base import AttackResult, check_eps, check_inputs, frozen, summarize

__all__ = ["ATTACKS", "AttackFn", "AttackSpec", "attack_config", "register_attack", "run_attack"]

# fn(model, x, y, cfg, gen, target) -> (adversarial images, queries per image or None)
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, Any, torch.Generator, "torch.Tensor | None"],
                    tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    config_cls: type
    fn: AttackFn
    targeted: bool  # True when the attack needs a target class (TrISec, JSMA)
    description: str


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(name: str, config_cls: type, description: str, *,
                    targeted: bool = False) -> Callable[[AttackFn], AttackFn]:
    def deco(fn: AttackFn) -> AttackFn:
        ATTACKS[name] = AttackSpec(name, config_cls, fn, targeted, description)
        return fn
    return deco


def _spec(name: str) -> AttackSpec:
    key = name.lower().replace("_", "-")
    if key not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; allowed: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[key]


def attack_config(name: str, **options: Any) -> Any:
    """Build (and validate) the config of attack ``name`` from keyword options."""
    return from_mapping(_spec(name).config_cls, options, section=f"attack {name}")


def _spec_for(cfg: Any) -> AttackSpec:
    for spec in ATTACKS.values():
        if type(cfg) is spec.config_cls:
            return spec
    raise ConfigError(f"{type(cfg).__name__} is not an attack config; allowed: "
                      f"{', '.join(s.config_cls.__name__ for s in ATTACKS.values())}")


def default_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The next class, ``(y + 1) mod C``: a fixed, reproducible target choice."""
    return (y + 1) % num_classes


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Any, *, seed: int = 0,
               target: torch.Tensor | None = None, batch_size: int = 1000, with_ssim: bool = True) -> AttackResult:
    """Attack ``model`` on images ``x`` (in [0, 1]) with labels ``y``; the attack and its options come from ``cfg``."""
    spec = _spec_for(cfg)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    classes = check_inputs(model, x, y)
    if isinstance(getattr(cfg, "eps", None), (int, float)):
        check_eps(cfg.eps, getattr(cfg, "norm", "linf"), int(x[0].numel()))
    if spec.targeted and target is None:
        target = default_targets(y, classes)
    if target is not None and (len(target) != len(y) or int(target.min()) < 0 or int(target.max()) >= classes):
        raise ConfigError(f"target classes must be {len(y)} labels in [0, {classes - 1}]")
    gen = torch.Generator().manual_seed(seed)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    advs, queries = [], []
    with frozen(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            tb = target[i:i + batch_size].to(dev) if target is not None else None
            adv, q = spec.fn(model, xb, yb, cfg, gen, tb)
            advs.append(adv.detach().cpu())
            if q is not None:
                queries.append(q.cpu())
    adv_all = torch.cat(advs) if advs else x.clone()
    q_all = torch.cat(queries) if queries else None
    return summarize(spec.name, model, x, y, adv_all, target=target, queries=q_all, with_ssim=with_ssim)

"""A resource-efficient decision-based attack in the spirit of RED-Attack: Khalid, Ali, Hanif, Rehman,
Ahmed and Shafique, "RED-Attack: Resource Efficient Decision based Attack for Machine Learning",
arXiv:1901.10258 (2019).

Like HopSkipJump it sees only labels, but it spends *one* query per iteration instead of a
Monte-Carlo gradient estimate: start from a misclassified point, halve the distance to the clean
image along the segment (half-way point search), then repeatedly pull a random group of ``group``
pixels back towards the clean image and keep the move only if the label stays wrong. The group
size adapts (grows after accepted moves, shrinks after rejected ones). Cheap in queries, memory and
compute, which is what an attacker on an edge device has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.security.hopskipjump import DecisionOracle, binary_search, initial_adversarial
from crosslayer.security.registry import register_attack
from crosslayer.train import progress

__all__ = ["REDAttackConfig", "red_attack"]


@dataclass(frozen=True, kw_only=True)
class REDAttackConfig(Config):
    """Defaults: 300 queries per image, groups of 16 pixels pulled back by half their difference."""

    max_queries: int = 300
    group: int = 16
    pull: float = 0.5
    binary_tol: float = 0.01

    def validate(self) -> None:
        check_range("max_queries", self.max_queries, 10)
        check_range("group", self.group, 1)
        check_range("pull", self.pull, 0.0, 1.0, lo_open=True)
        check_range("binary_tol", self.binary_tol, 0.0, 1.0, lo_open=True, hi_open=True)


def red_attack_one(model: nn.Module, x: torch.Tensor, label: int, pool: torch.Tensor, cfg: REDAttackConfig,
                   gen: torch.Generator) -> tuple[torch.Tensor, int]:
    oracle = DecisionOracle(model, label, cfg.max_queries)
    start = initial_adversarial(oracle, x, pool, gen)
    if start is None:
        return x.clone(), oracle.queries
    adv = binary_search(oracle, x, start, cfg.binary_tol).flatten()
    xf = x.flatten()
    d, group = xf.numel(), min(cfg.group, x.numel())
    while oracle.left > 0:
        diff = adv - xf
        moved = diff.abs() > 1e-6
        if not bool(moved.any()):
            break
        # choose among pixels that still differ, weighted by how much they differ
        idx = torch.multinomial(diff.abs().cpu() + 1e-12, min(group, int(moved.sum())), generator=gen).to(x.device)
        cand = adv.clone()
        cand[idx] = adv[idx] - cfg.pull * diff[idx]
        r = oracle.is_adv(cand.view_as(x)[None])
        if len(r) and bool(r[0]):
            adv = cand
            group = min(d, group * 2)
        else:
            group = max(1, group // 2)
    return adv.view_as(x), oracle.queries


def red_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: REDAttackConfig,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    advs, queries = [], []
    with torch.no_grad():
        pred = model(x).argmax(1)
    with progress() as bar:
        task = bar.add_task("RED-Attack", total=len(x), info="")
        for i in range(len(x)):
            bar.advance(task)
            if int(pred[i]) != int(y[i]):
                advs.append(x[i].clone())
                queries.append(0)
                continue
            a, q = red_attack_one(model, x[i], int(y[i]), x, cfg, gen)
            advs.append(a)
            queries.append(q)
    return torch.stack(advs), torch.tensor(queries)


@register_attack("red", REDAttackConfig, "resource-efficient decision-based attack, 1 query/step (RED-Attack, 2019)")
def _red(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: REDAttackConfig, gen: torch.Generator,
         target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return red_attack(model, x, y, cfg, gen)

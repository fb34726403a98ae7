"""HopSkipJump: Chen, Jordan and Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
Attack", IEEE S&P 2020 (L2, untargeted).

Uses only the predicted label. Start from a misclassified point (uniform noise, else the nearest
image of another class in the batch), binary-search to the decision boundary, then repeat: estimate
the boundary's normal by Monte-Carlo sign queries around the boundary point, step along it with a
geometric step-size search, binary-search back to the boundary. Every model call is counted against
``max_queries`` per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.security.registry import register_attack
from crosslayer.train import progress

__all__ = ["DecisionOracle", "HopSkipJumpConfig", "hopskipjump"]


@dataclass(frozen=True, kw_only=True)
class HopSkipJumpConfig(Config):
    """Defaults: 1,000 queries per image, 100 initial gradient samples (grows as sqrt(iteration))."""

    max_queries: int = 1000
    init_samples: int = 100
    max_samples: int = 1000
    binary_tol: float = 0.001

    def validate(self) -> None:
        check_range("max_queries", self.max_queries, 10)
        check_range("init_samples", self.init_samples, 1)
        check_range("max_samples", self.max_samples, 1)
        check_range("binary_tol", self.binary_tol, 0.0, 1.0, lo_open=True, hi_open=True)


class DecisionOracle:
    """Labels-only access to a model, counting queries per image (state with a lifecycle: one attack)."""

    def __init__(self, model: nn.Module, label: int, budget: int) -> None:
        self.model, self.label, self.budget, self.queries = model, label, budget, 0

    @property
    def left(self) -> int:
        return self.budget - self.queries

    @torch.no_grad()
    def is_adv(self, xs: torch.Tensor) -> torch.Tensor:
        """True where the label differs from the true one; each image costs one query."""
        xs = xs[: max(0, self.left)]
        self.queries += len(xs)
        if not len(xs):
            return torch.zeros(0, dtype=torch.bool)
        return self.model(xs).argmax(1) != self.label


def binary_search(oracle: DecisionOracle, x: torch.Tensor, adv: torch.Tensor, tol: float) -> torch.Tensor:
    """The point on the segment ``x -> adv`` closest to ``x`` that is still adversarial (to ``tol``)."""
    lo, hi = 0.0, 1.0  # fraction of the way from adv back to x
    while hi - lo > tol and oracle.left > 0:
        mid = (lo + hi) / 2
        r = oracle.is_adv((adv + mid * (x - adv))[None])
        if len(r) and bool(r[0]):
            lo = mid
        else:
            hi = mid
    return adv + lo * (x - adv)


def initial_adversarial(oracle: DecisionOracle, x: torch.Tensor, pool: torch.Tensor,
                        gen: torch.Generator, tries: int = 20) -> torch.Tensor | None:
    """Uniform noise, else images of the batch the model labels differently (closest first)."""
    for _ in range(tries):
        noise = torch.rand(x.shape, generator=gen).to(x.device)
        r = oracle.is_adv(noise[None])
        if len(r) and bool(r[0]):
            return noise
    order = (pool - x).flatten(1).norm(dim=1).argsort()
    for j in order.tolist():
        r = oracle.is_adv(pool[j][None])
        if len(r) and bool(r[0]):
            return pool[j].clone()
        if oracle.left <= 0:
            break
    return None


def _estimate_gradient(oracle: DecisionOracle, xb: torch.Tensor, samples: int, delta: float,
                       gen: torch.Generator) -> torch.Tensor | None:
    samples = min(samples, oracle.left)
    if samples < 2:
        return None
    u = torch.randn((samples, *xb.shape), generator=gen).to(xb.device)
    u = u / u.flatten(1).norm(dim=1).view(-1, *([1] * xb.dim()))
    pts = (xb + delta * u).clamp(0.0, 1.0)
    u = (pts - xb) / delta
    phi = oracle.is_adv(pts).float() * 2 - 1
    if len(phi) < len(u):
        u = u[: len(phi)]
    if abs(float(phi.mean())) == 1.0:  # all on one side: the baseline would cancel the signal
        g = phi.mean() * u.mean(0)
    else:
        g = ((phi - phi.mean()).view(-1, *([1] * xb.dim())) * u).mean(0)
    return g / g.norm().clamp_min(1e-12)


def hopskipjump_one(model: nn.Module, x: torch.Tensor, label: int, pool: torch.Tensor, cfg: HopSkipJumpConfig,
                    gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """Attack one image; returns the best adversarial point (or ``x``) and the queries spent."""
    oracle = DecisionOracle(model, label, cfg.max_queries)
    start = initial_adversarial(oracle, x, pool, gen)
    if start is None:
        return x.clone(), oracle.queries
    d = x.numel()
    theta = cfg.binary_tol
    adv = binary_search(oracle, x, start, theta)
    it = 0
    while oracle.left > 2:
        it += 1
        dist = float((adv - x).norm())
        delta = max(math.sqrt(d) * theta * dist, 1e-4)
        g = _estimate_gradient(oracle, adv, min(cfg.max_samples, int(cfg.init_samples * math.sqrt(it))), delta, gen)
        if g is None:
            break
        eps = dist / math.sqrt(it)
        cand = adv
        while oracle.left > 0:  # geometric step search: halve until still adversarial
            cand = (adv + eps * g).clamp(0.0, 1.0)
            r = oracle.is_adv(cand[None])
            if len(r) and bool(r[0]):
                break
            eps /= 2
            if eps < 1e-6:
                cand = adv
                break
        new = binary_search(oracle, x, cand, theta)
        if float((new - x).norm()) < dist:
            adv = new
    return adv, oracle.queries


def hopskipjump(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: HopSkipJumpConfig,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch wrapper: images are attacked one after another (each with its own query budget)."""
    advs, queries = [], []
    with torch.no_grad():
        pred = model(x).argmax(1)
    with progress() as bar:
        task = bar.add_task("HopSkipJump", total=len(x), info="")
        for i in range(len(x)):
            bar.advance(task)
            if int(pred[i]) != int(y[i]):  # already misclassified: nothing to do, no queries spent
                advs.append(x[i].clone())
                queries.append(0)
                continue
            a, q = hopskipjump_one(model, x[i], int(y[i]), x, cfg, gen)
            advs.append(a)
            queries.append(q)
    return torch.stack(advs), torch.tensor(queries)


@register_attack("hopskipjump", HopSkipJumpConfig, "decision-based L2 attack with a query budget (Chen et al., 2020)")
def _hsj(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: HopSkipJumpConfig, gen: torch.Generator,
         target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return hopskipjump(model, x, y, cfg, gen)

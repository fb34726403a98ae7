"""Choosing multipliers: accuracy sweeps (uniform and per layer, the survey's Fig. 9), a quick
per-layer sensitivity ranking, and the greedy resilience-guided assignment under an accuracy budget.

Greedy selection (in the spirit of the layer-wise resilience analysis of AxNN, Venkataramani et al.,
ISLPED 2014, and of Mrazek et al., ICCAD 2016): visit layers from the most resilient; give each the
cheapest multiplier whose *whole-model* accuracy, together with the choices already made, stays within
``budget_pp`` of the exact int8 model; layers where none fits keep the exact multiplier. The estimated
power saving weighs each layer's multiplier by its share of the model's multiply-accumulates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from crosslayer.approx.emulate import approximable_layers, approximate_model
from crosslayer.approx.metrics import uniform_metrics
from crosslayer.approx.tables import Multiplier
from crosslayer.data import ImageDataset
from crosslayer.errors import StageError
from crosslayer.train import evaluate, progress

__all__ = ["Selection", "SweepPoint", "greedy_select", "layer_macs", "per_layer_sweep", "power_saving",
           "sensitivity_ranking", "uniform_sweep"]

log = logging.getLogger(__name__)
Evaluator = Callable[[nn.Module], float]


@dataclass(frozen=True)
class SweepPoint:
    """Accuracy of one multiplier (on all layers, or on one layer only)."""

    multiplier: str
    layer: str  # "*" for all layers
    med: float
    mred: float
    relative_power: float
    accuracy: float


@dataclass
class Selection:
    assignment: dict[str, Multiplier]
    accuracy: float
    reference_accuracy: float
    power_saving: float
    evaluations: int
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def loss_pp(self) -> float:
        return 100.0 * (self.reference_accuracy - self.accuracy)


def accuracy_on(data: ImageDataset, batch_size: int = 1000) -> Evaluator:
    return lambda model: evaluate(model, data, batch_size).accuracy


def layer_macs(model: nn.Module, sample: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per image of every approximable layer (from one forward pass)."""
    names = approximable_layers(model)
    macs: dict[str, int] = {}
    hooks = []
    for name in names:
        m = model.get_submodule(name)
        inner = getattr(m, "layer", m)

        def hook(mod: nn.Module, inp: Any, out: torch.Tensor, name: str = name, inner: nn.Module = inner) -> None:
            w: torch.Tensor = inner.weight  # type: ignore[assignment]
            per_out = w[0].numel()
            macs[name] = int(out[0].numel() * per_out)
        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()
            model(sample[:1])
    finally:
        for h in hooks:
            h.remove()
    return macs


def power_saving(assignment: Mapping[str, Multiplier], macs: Mapping[str, int]) -> float:
    """``1 - sum_l MAC_l p_l / sum_l MAC_l`` (exact layers count with ``p = 1``)."""
    total = sum(macs.values())
    if total == 0:
        return 0.0
    spent = sum(n * (assignment[name].relative_power if name in assignment else 1.0) for name, n in macs.items())
    return 1.0 - spent / total


def uniform_sweep(qmodel: nn.Module, mults: Sequence[Multiplier], score: Evaluator) -> list[SweepPoint]:
    """Accuracy with every layer on the same multiplier, for each multiplier."""
    layers = approximable_layers(qmodel)
    out = []
    with progress() as bar:
        task = bar.add_task("uniform sweep", total=len(mults), info="")
        for m in mults:
            met = uniform_metrics(m)
            acc = score(approximate_model(qmodel, {n: m for n in layers}))
            out.append(SweepPoint(m.name, "*", met.med, met.mred, m.relative_power, acc))
            bar.update(task, advance=1, info=f"{m.name} {acc:.4f}")
    return out


def per_layer_sweep(qmodel: nn.Module, mults: Sequence[Multiplier], score: Evaluator,
                    layers: Sequence[str] | None = None) -> list[SweepPoint]:
    """Accuracy with one layer on each multiplier and every other layer exact."""
    names = list(layers) if layers is not None else approximable_layers(qmodel)
    out = []
    with progress() as bar:
        task = bar.add_task("per-layer sweep", total=len(mults) * len(names), info="")
        for layer in names:
            for m in mults:
                met = uniform_metrics(m)
                acc = score(approximate_model(qmodel, {layer: m}))
                out.append(SweepPoint(m.name, layer, met.med, met.mred, m.relative_power, acc))
                bar.update(task, advance=1, info=f"{layer} {m.name} {acc:.4f}")
    return out


def sensitivity_ranking(points: Sequence[SweepPoint], reference: float) -> list[str]:
    """Layers ordered most resilient first: smallest mean accuracy drop over the per-layer sweep."""
    drops: dict[str, list[float]] = {}
    for p in points:
        if p.layer != "*":
            drops.setdefault(p.layer, []).append(reference - p.accuracy)
    if not drops:
        raise StageError("no per-layer sweep points to rank layers by")
    return sorted(drops, key=lambda n: (sum(drops[n]) / len(drops[n]), n))


def greedy_select(qmodel: nn.Module, mults: Sequence[Multiplier], ranking: Sequence[str], score: Evaluator, *,
                  budget_pp: float, macs: Mapping[str, int], reference: float | None = None,
                  single_layer: Mapping[tuple[str, str], float] | None = None) -> Selection:
    """The greedy assignment described in the module docstring.

    ``single_layer[(layer, multiplier)]``, accuracies from :func:`per_layer_sweep`, prune candidates that
    already break the budget on their own (a necessary condition), saving evaluations.
    """
    layers = approximable_layers(qmodel)
    unknown = [n for n in ranking if n not in layers]
    if unknown:
        raise StageError(f"ranking names {', '.join(map(repr, unknown))}, not quantized layers of the model "
                         f"({', '.join(layers)})")
    exact_model = approximate_model(qmodel, {})
    ref = score(exact_model) if reference is None else reference
    floor = ref - budget_pp / 100.0
    order = sorted(mults, key=lambda m: (m.relative_power, m.name))
    chosen: dict[str, Multiplier] = {}
    trace: list[dict[str, Any]] = []
    evals, acc_now = 0, ref
    for layer in ranking:
        for m in order:
            if m.relative_power >= 1.0:
                break
            if single_layer is not None and single_layer.get((layer, m.name), 1.0) < floor:
                continue
            acc = score(approximate_model(qmodel, {**chosen, layer: m}))
            evals += 1
            ok = acc >= floor
            trace.append({"layer": layer, "multiplier": m.name, "accuracy": acc, "accepted": ok})
            if ok:
                chosen[layer] = m
                acc_now = acc
                break
    log.info("greedy selection: %d evaluations, accuracy %.4f (reference %.4f)", evals, acc_now, ref)
    return Selection(chosen, acc_now, ref, power_saving(chosen, macs), evals, trace)

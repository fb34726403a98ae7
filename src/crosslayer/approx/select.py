"""Choosing multipliers: accuracy sweeps (uniform and per layer, the survey's Fig. 9), a quick
per-layer sensitivity ranking, and the greedy resilience-guided assignment under an accuracy budget.

Greedy selection (in the spirit of the layer-wise resilience analysis of AxNN, Venkataramani et al.,
ISLPED 2014, and of Mrazek et al., ICCAD 2016): visit layers from the most resilient; give each the
cheapest multiplier whose *whole-model* accuracy, together with the choices already made, stays within
``budget_pp`` of the exact int8 model; layers where none fits keep the exact multiplier. The estimated
power saving weighs each layer's multiplier by its share of the model's multiply-accumulates.

Acceptance rule. The selection images are a sample, so an observed loss below the budget can be luck:
many candidates are tried and the greedy keeps the lucky ones. When the evaluator gives per-image
outcomes (:func:`correct_on`), a candidate is accepted only if the observed loss plus a one-sided
confidence margin stays within the budget::

    loss + z_c * SE <= budget,   SE = sqrt((b + c) - (b - c)^2 / n) / n

where, on the same ``n`` images, ``b`` counts images the exact model gets right and the candidate wrong, ``c``
the reverse, and ``z_c`` is the standard normal quantile of ``confidence`` (1.645 for 0.95, 2.326 for the
default 0.99). ``SE`` is the standard error of the difference of two *dependent* (paired) proportions, the
Wald interval behind McNemar's test (McNemar, Psychometrika 1947; Agresti, *Categorical Data Analysis*, 3rd
ed., Wiley 2013, Sec. 11.1). Pairing matters: both models see the same images, so only the images on which
they disagree carry noise. An evaluator that returns a plain accuracy (a float) gives no per-image outcomes;
the margin is then 0 and the rule is ``loss <= budget``.
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
from crosslayer.hw.workload import trace_layers
from crosslayer.stats import one_sided_z, paired_loss
from crosslayer.train import evaluate, predict, progress, within_budget

__all__ = ["Selection", "SweepPoint", "accuracy_on", "as_accuracy", "correct_on", "greedy_select", "layer_macs",
           "paired_loss", "per_layer_sweep", "power_saving", "sensitivity_ranking", "uniform_sweep"]

log = logging.getLogger(__name__)
Outcome = float | torch.Tensor  # an accuracy, or per-image correctness (bool / 0-1 tensor, one entry per image)
Evaluator = Callable[[nn.Module], Outcome]


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
    """The chosen assignment; ``margin_pp`` is the confidence margin of the accepted whole-model loss
    (0 when the evaluator gave no per-image outcomes), ``images`` the selection images (0 if unknown)."""

    assignment: dict[str, Multiplier]
    accuracy: float
    reference_accuracy: float
    power_saving: float
    evaluations: int
    trace: list[dict[str, Any]] = field(default_factory=list)
    margin_pp: float = 0.0
    confidence: float = 0.99
    images: int = 0

    @property
    def loss_pp(self) -> float:
        return 100.0 * (self.reference_accuracy - self.accuracy)

    @property
    def loss_bound_pp(self) -> float:
        """Observed loss plus the confidence margin: what the acceptance rule held within the budget."""
        return self.loss_pp + self.margin_pp


def accuracy_on(data: ImageDataset, batch_size: int = 1000) -> Evaluator:
    """Evaluator giving the accuracy (a float) on ``data``: no per-image outcomes, so no margin."""
    return lambda model: evaluate(model, data, batch_size).accuracy


def correct_on(data: ImageDataset, batch_size: int = 1000) -> Callable[[nn.Module], torch.Tensor]:
    """Evaluator giving per-image correctness (a bool tensor) on ``data``, for the paired margin."""
    labels = data.labels

    def score(model: nn.Module) -> torch.Tensor:
        pred = predict(model, data.images, batch_size).argmax(1).cpu()
        return pred == labels
    return score


def as_accuracy(outcome: Outcome) -> float:
    """Accuracy of an evaluator's outcome (a float as it is, a per-image tensor its mean)."""
    if isinstance(outcome, torch.Tensor):
        if outcome.numel() == 0:
            raise StageError("the evaluator returned no per-image outcomes (empty selection set)")
        return float(outcome.to(torch.float64).mean())
    return float(outcome)


def layer_macs(model: nn.Module, sample: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per image of every approximable layer (from one traced forward pass of one sample)."""
    names = set(approximable_layers(model))
    return {c.name: c.macs_per_sample for c in trace_layers(model, sample[:1], lambda n, _m: n in names)}


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
            acc = as_accuracy(score(approximate_model(qmodel, {n: m for n in layers})))
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
                acc = as_accuracy(score(approximate_model(qmodel, {layer: m})))
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
                  budget_pp: float, macs: Mapping[str, int], reference: Outcome | None = None,
                  single_layer: Mapping[tuple[str, str], float] | None = None,
                  confidence: float = 0.99) -> Selection:
    """The greedy assignment and acceptance rule described in the module docstring.

    ``score`` gives an accuracy or per-image correctness (:func:`correct_on`; enables the paired
    margin at ``confidence``). ``reference`` is the exact int8 model's outcome on the same images
    (computed when None, or when it is a float but ``score`` gives per-image outcomes).
    ``single_layer[(layer, multiplier)]``, accuracies from :func:`per_layer_sweep`, prune candidates that
    already break the budget on their own (a necessary condition), saving evaluations.
    """
    z = one_sided_z(confidence)
    layers = approximable_layers(qmodel)
    unknown = [n for n in ranking if n not in layers]
    if unknown:
        raise StageError(f"ranking names {', '.join(map(repr, unknown))}, not quantized layers of the model "
                         f"({', '.join(layers)})")
    ref_out: Outcome = score(approximate_model(qmodel, {})) if reference is None else reference
    ref = as_accuracy(ref_out)
    floor = ref - budget_pp / 100.0
    order = sorted(mults, key=lambda m: (m.relative_power, m.name))
    chosen: dict[str, Multiplier] = {}
    trace: list[dict[str, Any]] = []
    evals, acc_now, margin_now = 0, ref, 0.0
    for layer in ranking:
        for m in order:
            if m.relative_power >= 1.0:
                break
            if single_layer is not None and single_layer.get((layer, m.name), 1.0) < floor:
                continue
            out = score(approximate_model(qmodel, {**chosen, layer: m}))
            evals += 1
            acc = as_accuracy(out)
            margin = 0.0
            if isinstance(out, torch.Tensor):
                if not isinstance(ref_out, torch.Tensor):  # per-image outcomes need the reference's too
                    ref_out = score(approximate_model(qmodel, {}))
                    evals += 1
                if not isinstance(ref_out, torch.Tensor):
                    raise StageError("the evaluator mixes accuracies and per-image outcomes")
                _, se = paired_loss(ref_out, out)
                margin = z * se
            loss_pp, margin_pp = 100.0 * (ref - acc), 100.0 * margin
            ok = within_budget(loss_pp + margin_pp, budget_pp)
            trace.append({"layer": layer, "multiplier": m.name, "accuracy": acc, "loss_pp": loss_pp,
                          "margin_pp": margin_pp, "accepted": ok})
            if ok:
                chosen[layer] = m
                acc_now, margin_now = acc, margin_pp
                break
    n_img = ref_out.numel() if isinstance(ref_out, torch.Tensor) else 0
    log.info("greedy selection: %d evaluations, accuracy %.4f (reference %.4f), margin %.3f pp at %.2f",
             evals, acc_now, ref, margin_now, confidence)
    return Selection(chosen, acc_now, ref, power_saving(chosen, macs), evals, trace, margin_now, confidence, n_img)

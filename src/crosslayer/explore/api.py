"""``pareto_sweep``: the verb of the exploration step (named for what it does; ``crosslayer.explore`` is the
package). Every (pruning scheme, sparsity) is pruned one-shot from the model and fine-tuned with its masks,
then quantized at each bit width (survey Sec. III, Fig. 7 and Fig. 8); each point's test accuracy, storage
(values, relative indices with fillers, scales) and MACs are measured, and the accuracy-vs-storage Pareto
front drawn from them.

The point reported as *best* is chosen on the validation split (the smallest storage within ``budget_pp`` of
the model's validation accuracy, else the most accurate on validation); the test split only measures it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.explore.pareto import pareto_front
from crosslayer.explore.sweep import DesignPoint, sweep
from crosslayer.prune import SCHEMES
from crosslayer.train import TrainConfig, evaluate, within_budget

__all__ = ["ExploreConfig", "ParetoResult", "pareto_sweep"]


@dataclass(frozen=True, kw_only=True)
class ExploreConfig(Config):
    """The grid to sweep (``schemes`` × ``sparsities`` × ``bits`` of the weights, activations at ``act_bits``),
    the fine-tuning each pruned point gets (``finetune_epochs`` of Adam at ``finetune_lr`` on the first
    ``finetune_limit`` training images, 0 = all) and the accuracy budget of the best point (``budget_pp``)."""

    schemes: tuple[str, ...] = SCHEMES
    sparsities: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
    bits: tuple[int, ...] = (8, 6, 4)
    act_bits: int = 8
    finetune_epochs: int = 1
    finetune_lr: float = 0.001
    finetune_limit: int = 0
    budget_pp: float = 0.5

    def validate(self) -> None:
        for s in self.schemes:
            if s not in SCHEMES:
                raise ConfigError(f"schemes: {s!r} is not allowed; choose from {', '.join(SCHEMES)}")
        if not self.schemes or not self.sparsities or not self.bits:
            raise ConfigError("schemes, sparsities and bits must each list at least one value")
        for sp in self.sparsities:
            check_range("sparsities[]", sp, 0.0, 1.0, hi_open=True)
        for b in self.bits:
            check_range("bits[]", b, 2, 16)
        check_range("act_bits", self.act_bits, 2, 16)
        check_range("finetune_epochs", self.finetune_epochs, 0)
        check_range("finetune_lr", self.finetune_lr, 0.0, lo_open=True)
        check_range("finetune_limit", self.finetune_limit, 0)
        check_range("budget_pp", self.budget_pp, 0.0, 100.0)


@dataclass(frozen=True)
class ParetoResult:
    """Every design point, the indices of the accuracy-vs-storage Pareto front among them, the model's own
    accuracies, and the index of the best point (chosen on validation, see the module docstring)."""

    points: list[DesignPoint]
    front: list[int]
    baseline_accuracy: float
    baseline_val_accuracy: float
    best: int
    best_within_budget: bool

    @property
    def best_point(self) -> DesignPoint:
        return self.points[self.best]


def pareto_sweep(model: nn.Module, config: ExploreConfig, data: DataSplits, *, seed: int = 0) -> ParetoResult:
    """Sweep pruning × quantization from ``model`` (not modified) and return every measured point."""
    base = copy.deepcopy(model).cpu().eval()
    ft = TrainConfig(epochs=config.finetune_epochs, lr=config.finetune_lr, optimizer="adam", weight_decay=0.0)
    points = sweep(base, data, schemes=config.schemes, sparsities=config.sparsities, bits=config.bits, finetune=ft,
                   act_bits=config.act_bits, seed=seed, finetune_limit=config.finetune_limit)
    front = pareto_front([[p.test_accuracy, p.storage_bits] for p in points], maximize=[True, False])
    base_val = evaluate(base, data.val).accuracy
    val = [p.val_accuracy if p.val_accuracy is not None else float("-inf") for p in points]
    within = [i for i in range(len(points)) if within_budget(100 * (base_val - val[i]), config.budget_pp)]
    best = (min(within, key=lambda i: (points[i].storage_bits, -val[i])) if within
            else max(range(len(points)), key=lambda i: val[i]))
    return ParetoResult(points, front, evaluate(base, data.test).accuracy, base_val, best, bool(within))

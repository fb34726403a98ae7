"""How low can the weight-memory voltage go? Accuracy against voltage over sampled chips, for the
conventional model and for memory-adapted ones, and the lowest voltage within an accuracy budget.

The rule (fixed before any run): walk the voltages from the highest down; a voltage passes when the mean
accuracy over the chips on the *selection* split (validation) is within ``budget_pp`` of the reference
(the conventional model's fault-free accuracy on the same images); the answer is the last voltage before
the first failure. The test split only measures the chosen points. Memory-adaptive training (MATIC) is
run per chip at each voltage below the conventional model's answer, from the highest down, and stops
at its own first failure, so the adapted search trains only where it can still win.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from crosslayer.data.datasets import ImageDataset
from crosslayer.memory.adapt import AdaptConfig, ChipAccuracy, chip_accuracy, memory_adaptive_train
from crosslayer.memory.chip import ChipMap
from crosslayer.quant import FixedPointSpec
from crosslayer.train import progress, within_budget

__all__ = ["AdaptedPoint", "adapted_search", "lowest_within_budget", "voltage_sweep"]


def voltage_sweep(model: nn.Module, chips: Sequence[ChipMap], voltages: Sequence[float], data: ImageDataset,
                  code_spec: FixedPointSpec | None = None) -> list[ChipAccuracy]:
    """Accuracy of ``model`` through every chip at every voltage (in the order given)."""
    out = []
    with progress() as bar:
        task = bar.add_task("voltage sweep", total=len(voltages), info="")
        for v in voltages:
            out.append(chip_accuracy(model, data, chips, v, code_spec))
            bar.update(task, advance=1, info=f"{v:g} V {out[-1].mean:.4f}")
    return out


def lowest_within_budget(points: Sequence[ChipAccuracy], reference: float, budget_pp: float) -> float | None:
    """The lowest voltage reached walking down from the highest before the first point whose mean accuracy
    loses more than ``budget_pp`` against ``reference`` (None if the highest already does)."""
    best: float | None = None
    for p in sorted(points, key=lambda q: -q.voltage):
        if not within_budget(100.0 * (reference - p.mean), budget_pp):
            break
        best = p.voltage
    return best


@dataclass
class AdaptedPoint:
    """Memory-adapted models at one voltage: one per chip (and training seed), with their selection-split
    accuracy through their own chip."""

    voltage: float
    selection: ChipAccuracy
    models: list[nn.Module] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    train_seconds: float = 0.0


def adapted_search(model: nn.Module, chips: Sequence[ChipMap], voltages: Sequence[float], train: ImageDataset,
                   selection: ImageDataset, reference: float, budget_pp: float, cfg: AdaptConfig, *,
                   seeds: Sequence[int] = (0,), code_spec: FixedPointSpec | None = None,
                   on_point: Callable[[AdaptedPoint], None] | None = None) -> tuple[list[AdaptedPoint], float | None]:
    """MAT per chip and seed at each voltage (visited from the highest down) until the mean selection
    accuracy over chips and seeds leaves the budget; returns every trained point and the lowest passing
    voltage (None if none passes). The models of a point are ordered chip-major (chip 0 seeds..., chip 1 ...)."""
    points: list[AdaptedPoint] = []
    best: float | None = None
    for v in sorted(voltages, reverse=True):
        models: list[nn.Module] = []
        accs: list[float] = []
        used: list[int] = []
        secs = 0.0
        for chip in chips:
            for s in seeds:
                net, res = memory_adaptive_train(model, chip, v, train, selection, cfg, seed=s, code_spec=code_spec)
                secs += res.train_seconds
                models.append(net)
                used.append(s)
                accs.extend(chip_accuracy(net, selection, [chip], v, code_spec).accuracies)
        pt = AdaptedPoint(float(v), ChipAccuracy(float(v), tuple(accs)), models, used, secs)
        points.append(pt)
        if on_point is not None:
            on_point(pt)
        if not within_budget(100.0 * (reference - pt.selection.mean), budget_pp):
            break
        best = float(v)
    return points, best

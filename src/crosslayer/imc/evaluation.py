"""Accuracy of a network on simulated crossbars, over chips (seeds) and over sweeps of one parameter."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from crosslayer.data.datasets import ImageDataset
from crosslayer.imc.crossbar import to_crossbar
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.train import evaluate

__all__ = ["SweepPoint", "crossbar_accuracy", "sweep"]


@dataclass(frozen=True)
class SweepPoint:
    value: float
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


def crossbar_accuracy(model: nn.Module, spec: CrossbarSpec, data: ImageDataset, *, seeds: Sequence[int],
                      calibration: torch.Tensor | None = None) -> tuple[float, ...]:
    """Test accuracy (fraction) of ``model`` programmed onto one crossbar chip per seed."""
    return tuple(evaluate(to_crossbar(model, spec, seed=s, calibration=calibration), data).accuracy for s in seeds)


def sweep(model: nn.Module, spec: CrossbarSpec, field: str, values: Sequence[float], data: ImageDataset, *,
          seeds: Sequence[int], calibration: torch.Tensor | None = None) -> list[SweepPoint]:
    """Accuracy over chips while ``spec.<field>`` takes each of ``values`` (e.g. ``d2d_sigma``, ``adc_bits``)."""
    return [SweepPoint(float(v), crossbar_accuracy(model, spec.replace(**{field: v}), data, seeds=seeds,
                                                   calibration=calibration)) for v in values]

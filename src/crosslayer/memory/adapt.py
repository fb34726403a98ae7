"""Memory-adaptive training (MAT) and the accuracy of a model read through chips at a voltage.

MAT (Kim et al., "MATIC: Learning Around Errors for Efficient Low-Voltage Neural Network Accelerators",
DATE 2018): the chip's weight-memory failures at the target voltage are profiled, and the network is
fine-tuned with those failing bits applied in every forward pass, so that it learns weights whose
*stored* values work; at inference the same chip, at the same voltage, reads the same faulty bits. Here
the profile is a :class:`~crosslayer.memory.chip.ChipMap`, the forward pass goes through
:func:`~crosslayer.memory.weights.chip_weights` (stored value forward, straight-through gradient to the
float weights), and the loop is :func:`crosslayer.train.fit` (its best-epoch choice is made on the
validation split, read through the same chip).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from crosslayer.config import Config, check_range
from crosslayer.data.datasets import ImageDataset
from crosslayer.memory.chip import ChipMap
from crosslayer.memory.weights import chip_weights
from crosslayer.quant import FixedPointSpec
from crosslayer.train import TrainConfig, TrainResult, fit, keep_pruned_zeros, predict

__all__ = ["AdaptConfig", "ChipAccuracy", "chip_accuracy", "chip_correct", "memory_adaptive_train"]

Voltage = float | Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class AdaptConfig(Config):
    """Fine-tuning schedule of memory-adaptive training (cosine learning-rate decay) and its data
    augmentation (as :class:`crosslayer.train.TrainConfig`; give the baseline's, so that the faulty
    memory is the only new ingredient)."""

    epochs: int = 1
    lr: float = 0.001
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "adam"
    augment_shift: int = 0
    augment_rotate: float = 0.0
    augment_scale: float = 0.0

    def validate(self) -> None:
        check_range("epochs", self.epochs, 1)
        self.train_config()

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, momentum=0.9,
                           weight_decay=0.0, schedule="cosine", optimizer=self.optimizer,
                           augment_shift=self.augment_shift, augment_rotate=self.augment_rotate,
                           augment_scale=self.augment_scale)


def memory_adaptive_train(model: nn.Module, chip: ChipMap | None, voltage: Voltage, train: ImageDataset,
                          val: ImageDataset, cfg: AdaptConfig | None = None, *, seed: int = 0,
                          code_spec: FixedPointSpec | None = None) -> tuple[nn.Module, TrainResult]:
    """A copy of ``model`` fine-tuned with ``chip``'s failing bits at ``voltage`` in the forward pass
    (``chip=None``: the same fine-tuning on the fault-free stored words, the control).

    The best epoch on ``val`` (read through the chip) is kept, and the starting weights count as epoch 0:
    if no epoch beats them, the copy keeps them (``result.best_epoch == 0``). Weights that are exactly zero
    (pruned) stay zero.
    """
    net = copy.deepcopy(model)
    keep_zeros = keep_pruned_zeros(net)  # pruned weights stay pruned
    with chip_weights(net, chip, voltage, code_spec):
        start = copy.deepcopy(net.state_dict())
        before = float(predict(net, val.images).argmax(1).eq(val.labels).to(torch.float64).mean())
        result = fit(net, train, val, (cfg or AdaptConfig()).train_config(), seed=seed, desc="memory-adaptive",
                     on_step=keep_zeros)
        if result.best_val_accuracy <= before:
            net.load_state_dict(start)
            result.best_val_accuracy, result.best_epoch = before, 0
    return net.eval(), result


def chip_correct(model: nn.Module, data: ImageDataset, chip: ChipMap | None, voltage: Voltage = 0.0,
                 code_spec: FixedPointSpec | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Per-image correctness of ``model`` on ``data`` with its weights read through ``chip`` at ``voltage``
    (``chip=None``: the stored words without faults)."""
    with chip_weights(model, chip, voltage, code_spec), parametrize.cached():  # weights fixed: read them once
        return predict(model, data.images, batch_size).argmax(1).cpu() == data.labels


@dataclass(frozen=True)
class ChipAccuracy:
    """Accuracies of one model at one voltage over several chips."""

    voltage: float
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    @property
    def worst(self) -> float:
        return min(self.accuracies)


def chip_accuracy(model: nn.Module | Sequence[nn.Module], data: ImageDataset, chips: Sequence[ChipMap],
                  voltage: float, code_spec: FixedPointSpec | None = None) -> ChipAccuracy:
    """Accuracy on ``data`` of ``model`` read through each chip at ``voltage`` (or of ``model[i]`` through
    ``chips[i]``: one adapted model per chip)."""
    models = [model] * len(chips) if isinstance(model, nn.Module) else list(model)
    if len(models) != len(chips):
        raise ValueError("one model per chip, or one model for all")
    accs = tuple(float(chip_correct(m, data, c, voltage, code_spec).to(torch.float64).mean())
                 for m, c in zip(models, chips, strict=True))
    return ChipAccuracy(float(voltage), accs)

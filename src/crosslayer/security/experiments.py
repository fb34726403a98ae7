"""End-to-end security experiments shared by the flow stage, the CLI and the benchmark.

* :func:`make_defence` builds an input defence by name.
* :func:`backdoor_experiment` poisons the training set (BadNets), trains a fresh copy of a model on it,
  measures clean accuracy and attack success, fine-prunes on clean data and measures both again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crosslayer.data import DataSplits, ImageDataset
from crosslayer.errors import ConfigError
from crosslayer.security.backdoor import BadNetsConfig, attack_success_rate, poison
from crosslayer.security.fine_pruning import FinePruneConfig, fine_prune
from crosslayer.security.learned_quant import learn_thresholds
from crosslayer.security.transforms import InputQuantization, InputTransform, LowPassFilter, MedianFilter
from crosslayer.train import TrainConfig, evaluate, fit

__all__ = ["DEFENCES", "BackdoorOutcome", "BackdoorResult", "backdoor_experiment", "make_defence"]

DEFENCES = ("quantize", "learned-quantize", "random-quantize", "median", "lowpass")


def make_defence(name: str, *, levels: int = 2, size: int = 3, sigma: float = 1.0, dither: float = 0.1,
                 model: nn.Module | None = None, calib: ImageDataset | None = None, eps: float = 0.2,
                 seed: int = 0) -> InputTransform:
    """An input defence by name (see :data:`DEFENCES`); ``learned-quantize`` needs ``model`` and ``calib``."""
    if name == "quantize":
        return InputQuantization(levels)
    if name == "random-quantize":
        return InputQuantization(levels, dither=dither, seed=seed)
    if name == "learned-quantize":
        if model is None or calib is None:
            raise ConfigError("learned-quantize needs a model and calibration images to learn its thresholds")
        t = learn_thresholds(model, calib.images, calib.labels, levels=levels, eps=eps, seed=seed)
        return InputQuantization(levels, thresholds=t)
    if name == "median":
        return MedianFilter(size)
    if name == "lowpass":
        return LowPassFilter(size, sigma)
    raise ConfigError(f"unknown defence {name!r}; allowed: {', '.join(DEFENCES)}")


@dataclass
class BackdoorResult:
    """The backdoored (then fine-pruned) model and its clean accuracy / attack success rate before and after
    fine-pruning (fractions), the channels pruned and the images poisoned."""

    clean_accuracy_before: float
    asr_before: float
    clean_accuracy_after: float
    asr_after: float
    pruned_channels: int
    channels: int
    poisoned_images: int
    model: nn.Module

    def metrics(self) -> dict[str, Any]:
        return {"badnets_clean_accuracy_before": self.clean_accuracy_before, "badnets_asr_before": self.asr_before,
                "badnets_clean_accuracy_after": self.clean_accuracy_after, "badnets_asr_after": self.asr_after,
                "badnets_clean_loss_pp": 100 * (self.clean_accuracy_before - self.clean_accuracy_after),
                "fine_pruning_channels_pruned": self.pruned_channels, "fine_pruning_channels": self.channels,
                "badnets_poisoned_images": self.poisoned_images}


BackdoorOutcome = BackdoorResult
"""The earlier name of :class:`BackdoorResult`."""


def backdoor_experiment(model: nn.Module, data: DataSplits, badnets: BadNetsConfig, train: TrainConfig,
                        prune: FinePruneConfig, *, seed: int = 0, init_state: dict[str, torch.Tensor] | None = None,
                        ) -> BackdoorResult:
    """Train a copy of ``model`` (re-initialised, or from ``init_state``) on poisoned data, then fine-prune it.

    Fine-pruning uses the clean training images (the defender's trusted data); the poisoned set is the
    attacker's. Accuracies are on ``data.test``; ASR on triggered test images of other classes.
    """
    net = copy.deepcopy(model)
    if init_state is not None:
        net.load_state_dict(init_state)
    else:
        gen_state = torch.get_rng_state()
        torch.manual_seed(seed)
        for m in net.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset) and m is not net:
                reset()
        torch.set_rng_state(gen_state)
    poisoned, idx = poison(data.train, badnets, seed=seed)
    fit(net, poisoned, data.val, train, seed=seed, desc="BadNets training")
    before_acc = evaluate(net, data.test).accuracy
    before_asr = attack_success_rate(net, data.test, badnets)
    res = fine_prune(net, data.train, data.val, prune, seed=seed)
    return BackdoorResult(before_acc, before_asr, evaluate(net, data.test).accuracy,
                           attack_success_rate(net, data.test, badnets), len(res.pruned), res.channels, len(idx), net)

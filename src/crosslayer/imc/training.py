"""Variation-aware training (Long et al., "Design of Reliable DNN Accelerator with Un-reliable
ReRAM", DATE 2019): at every step the weights of the Linear / Conv2d layers are perturbed by one
random programming of the crossbar model (:func:`crosslayer.imc.devices.weight_noise`: level
quantisation, variation, stuck-at faults, drift), the loss is taken on the perturbed network and its
gradient applied to the clean weights (straight-through), so the network learns weights whose
accuracy survives the hardware's variation. Runs through :func:`crosslayer.train.fit`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from crosslayer.config import MAX_BATCH, MAX_EPOCHS, Config, check_range
from crosslayer.data.datasets import ImageDataset
from crosslayer.imc.crossbar import mappable_layers
from crosslayer.imc.devices import weight_noise
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.train import LossFn, TrainConfig, TrainResult, fit

__all__ = ["AwareTrainConfig", "noisy_loss", "train_variation_aware"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AwareTrainConfig(Config):
    """Fine-tuning schedule of variation-aware training (cosine learning-rate decay); ``noise_scale``
    multiplies the spec's sigmas (Long et al. train at the device's own variation, i.e. 1.0);
    ``augment_shift`` / ``augment_rotate`` / ``augment_scale`` are the data augmentations of
    :class:`crosslayer.train.TrainConfig` (give them the baseline's values, so that the programming
    noise is the only new ingredient of the fine-tuning)."""

    epochs: int = 1
    lr: float = 0.001
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "adam"
    noise_scale: float = 1.0
    augment_shift: int = 0
    augment_rotate: float = 0.0
    augment_scale: float = 0.0

    def validate(self) -> None:
        check_range("epochs", self.epochs, 1, MAX_EPOCHS)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("noise_scale", self.noise_scale, 0.0)
        self.train_config()  # the schedule and augmentation are checked where they are used

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, momentum=0.9,
                           weight_decay=0.0, schedule="cosine", optimizer=self.optimizer,
                           augment_shift=self.augment_shift, augment_rotate=self.augment_rotate,
                           augment_scale=self.augment_scale)



def _crossbar_weights(model: nn.Module) -> list[str]:
    return [f"{n}.weight" if n else "weight" for n in mappable_layers(model)]


def noisy_loss(spec: CrossbarSpec, *, seed: int) -> LossFn:
    """A ``loss_fn`` for :func:`crosslayer.train.fit`: cross-entropy of the network whose
    Linear / Conv2d weights carry a fresh, seeded crossbar programming error at every call."""
    gen = torch.Generator().manual_seed(seed)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = dict(model.named_parameters())
        noisy = {name: params[name] + weight_noise(params[name], spec, gen).to(params[name].device)
                 for name in _crossbar_weights(model) if name in params}
        return nn.functional.cross_entropy(functional_call(model, noisy, (x,)), y)

    return loss


def train_variation_aware(model: nn.Module, train: ImageDataset, val: ImageDataset, spec: CrossbarSpec,
                          cfg: AwareTrainConfig | None = None, *, seed: int = 0) -> tuple[nn.Module, TrainResult]:
    """Fine-tune a copy of ``model`` under the crossbar's variation; returns it and the training record.

    Validation (for best-epoch selection) is on the clean network, as in :func:`fit`.
    """
    cfg = cfg or AwareTrainConfig()
    if not _crossbar_weights(model):
        from crosslayer.errors import StageError

        raise StageError("variation-aware training needs a model with Linear or Conv2d layers")
    s = cfg.noise_scale
    train_spec = spec.replace(d2d_sigma=spec.d2d_sigma * s, c2c_sigma=spec.c2c_sigma * s)
    net = copy.deepcopy(model)
    result = fit(net, train, val, cfg.train_config(), seed=seed, loss_fn=noisy_loss(train_spec, seed=seed),
                 desc="variation-aware", keep_best=False)
    log.info("variation-aware training: %d epoch(s), final val accuracy %.4f", cfg.epochs,
             result.history[-1]["val_accuracy"] if result.history else float("nan"))
    return net.eval(), result

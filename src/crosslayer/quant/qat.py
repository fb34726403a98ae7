"""Quantization-aware fine-tuning with the straight-through estimator (Bengio et al., 2013;
Jacob et al., CVPR 2018; Courbariaux et al., BinaryConnect, NeurIPS 2015 for binary / ternary).

The quantized layers fake-quantize weights and inputs in the forward pass and let the gradient
through (see :mod:`crosslayer.quant.fixed_point` and :mod:`crosslayer.quant.lowbit`), so the ordinary
training loop ``crosslayer.train.fit`` trains the float "shadow" weights. Zeros of a pruned model are
kept exactly zero by re-applying a mask after every optimizer step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crosslayer.config import MAX_BATCH, MAX_EPOCHS, Config, check_range
from crosslayer.data.datasets import ImageDataset
from crosslayer.errors import StageError
from crosslayer.train import TrainConfig, TrainResult, fit

__all__ = ["QATConfig", "apply_masks", "quantization_aware_finetune", "zero_masks"]


@dataclass(frozen=True, kw_only=True)
class QATConfig(Config):
    """Fine-tuning hyper-parameters (a short run at a small learning rate)."""

    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "adam"
    weight_decay: float = 0.0

    def validate(self) -> None:
        check_range("qat epochs", self.epochs, 0, MAX_EPOCHS)
        check_range("qat lr", self.lr, 0.0, lo_open=True)
        check_range("qat batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("qat weight_decay", self.weight_decay, 0.0)


    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
                           weight_decay=self.weight_decay, schedule="cosine")


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{param_name: bool mask}`` (True = kept) for every Conv2d / Linear weight holding exact zeros."""
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            if bool((w == 0).any()):
                out[f"{name}.weight" if name else "weight"] = w != 0
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked-out entries of the named parameters in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        p = params.get(name)
        if p is None:
            raise StageError(f"mask for {name!r} matches no parameter; parameters are: "
                             f"{', '.join(sorted(params))}")
        if tuple(mask.shape) != tuple(p.shape):
            raise StageError(f"mask for {name!r} has shape {tuple(mask.shape)}, the parameter {tuple(p.shape)}")
        p.mul_(mask.to(device=p.device, dtype=p.dtype))


def quantization_aware_finetune(model: nn.Module, train: ImageDataset, val: ImageDataset, cfg: QATConfig, *,
                                seed: int = 0, masks: Mapping[str, torch.Tensor] | None = None,
                                desc: str = "qat") -> TrainResult:
    """Fine-tune a model whose layers are quantized (in place), keeping ``masks`` zeros at zero.

    ``masks`` defaults to the model's current exact zeros (:func:`zero_masks`).
    """
    if len(train) == 0:
        raise StageError("quantization-aware training needs training data; the training set is empty")
    keep = dict(zero_masks(model) if masks is None else masks)
    apply_masks(model, keep)

    def on_step(m: nn.Module) -> None:
        if keep:
            apply_masks(m, keep)

    return fit(model, train, val, cfg.train_config(), seed=seed, on_step=on_step, desc=desc)

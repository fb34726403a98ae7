"""Approximation-aware fine-tuning (AxNN: Venkataramani, Ranjan, Roy, Raghunathan, "AxNN: energy-efficient
neuromorphic systems using approximate computing", ISLPED 2014): the forward pass uses the approximate
multipliers, the backward pass goes straight through the fake-quantized layer (:class:`ApproxLayer` in
training mode), so the weights adapt to the multipliers' errors. Runs through ``crosslayer.train.fit``;
weights that were exactly zero (pruned) stay zero.
"""

from __future__ import annotations

from torch import nn

from crosslayer.approx.emulate import approx_layers
from crosslayer.data import ImageDataset
from crosslayer.errors import StageError
from crosslayer.train import TrainConfig, TrainResult, fit, keep_pruned_zeros

__all__ = ["finetune"]


def finetune(model: nn.Module, train: ImageDataset, val: ImageDataset, cfg: TrainConfig, *, seed: int = 0,
             desc: str = "AxNN fine-tune") -> TrainResult:
    """Fine-tune an approximate model in place (see module docstring); returns ``fit``'s result."""
    layers = [m for _, m in approx_layers(model)]
    if not layers:
        raise StageError("the model has no approximate layer to fine-tune; assign multipliers first")
    return fit(model, train, val, cfg, seed=seed, on_step=keep_pruned_zeros(model), desc=desc)

"""Per-dataset input normalisation as the first layer of a model.

Images stay in [0, 1] pixel space everywhere in crosslayer (attacks, defences and input quantization
define their epsilons there); a model that wants standardised inputs carries :class:`Normalize` in front,
with the mean and standard deviation of its training split as buffers. So the statistics travel inside the
state dict, every stage sees the same pixel-space interface, and a loaded model needs no separate file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from crosslayer.errors import ModelError

__all__ = ["Normalize", "normalize_inputs", "set_input_stats"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean 0 and std 1 (the identity) until statistics are set."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        if mean is not None or std is not None:
            self.set(mean if mean is not None else [0.0] * channels, std if std is not None else [1.0] * channels)

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the per-channel statistics (one value per input channel; every std > 0)."""
        c = self.mean.shape[1]
        m = torch.as_tensor(list(mean), dtype=torch.float32)
        s = torch.as_tensor(list(std), dtype=torch.float32)
        if m.numel() != c or s.numel() != c:
            raise ModelError(f"input statistics need {c} value(s) per channel, got mean {list(mean)} and std "
                             f"{list(std)}")
        if not (torch.isfinite(m).all() and torch.isfinite(s).all() and bool((s > 0).all())):
            raise ModelError(f"input statistics must be finite with every std > 0, got mean {list(mean)} and "
                             f"std {list(std)}")
        self.mean.copy_(m.view(1, c, 1, 1))
        self.std.copy_(s.view(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


def set_input_stats(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> bool:
    """Set the statistics of the model's first :class:`Normalize` layer; ``False`` if it has none."""
    for m in model.modules():
        if isinstance(m, Normalize):
            m.set(mean, std)
            return True
    return False


class _HasChannelStats(Protocol):
    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]: ...


def normalize_inputs(model: nn.Module, train: _HasChannelStats) -> bool:
    """Set the model's :class:`Normalize` layer (if it has one) to the per-channel mean / std of the training
    images ``train`` (an :class:`~crosslayer.data.ImageDataset`); ``False`` for a model without one."""
    if not any(isinstance(m, Normalize) for m in model.modules()):
        return False
    return set_input_stats(model, *train.channel_stats())

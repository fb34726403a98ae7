"""``sparsify``: the one verb of the pruning step (named as torchao names it; ``crosslayer.prune`` is the
package). The config's type picks the technique:

- :class:`MagnitudePruneConfig`: one-shot unstructured magnitude pruning to a sparsity, with the class-blind,
  class-uniform or class-distribution scheme (See et al., CoNLL 2016); no data needed;
- :class:`ChannelPruneConfig`: one-shot structured pruning that physically removes the lowest-L1/L2
  channels of every prunable group (Li et al., ICLR 2017); no data needed;
- :class:`~crosslayer.prune.schedule.ScheduleConfig`: the iterative prune / fine-tune schedule within an
  accuracy budget (Han et al., NIPS 2015), which needs the data splits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.prune.masks import Masks, Scheme, apply_masks, magnitude_masks, prunable_weights
from crosslayer.prune.schedule import IterativePruner, PruneResult, ScheduleConfig
from crosslayer.prune.structured import Importance, prunable_groups, prune_structured

__all__ = ["ChannelPruneConfig", "MagnitudePruneConfig", "PruneResult", "sparsify"]


@dataclass(frozen=True, kw_only=True)
class MagnitudePruneConfig(Config):
    """One-shot magnitude pruning of every Conv2d / Linear weight (or of ``layers``) to ``sparsity``."""

    sparsity: float
    scheme: Scheme = "class-blind"
    layers: tuple[str, ...] = ()

    def validate(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True, kw_only=True)
class ChannelPruneConfig(Config):
    """One-shot structured pruning: remove ``amount`` of the channels of every prunable group.

    ``input_shape`` (C, H, W) traces the model when no data is given. ``round_to`` keeps channel counts
    multiples of it (8 suits ONNX Runtime on AVX2 CPUs; see :func:`crosslayer.prune.structured.kept_channels`).
    """

    amount: float
    importance: Importance = "l1"
    layers: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = ()
    round_to: int = 1

    def validate(self) -> None:
        check_range("amount", self.amount, 0.0, 1.0, hi_open=True)
        check_range("round_to", self.round_to, 1, 1024)
        if self.input_shape and (len(self.input_shape) != 3 or min(self.input_shape) < 1):
            raise ConfigError(f"input_shape = {list(self.input_shape)} must be (channels, height, width)")


PruneConfigs = MagnitudePruneConfig | ChannelPruneConfig | ScheduleConfig


def _example(cfg: ChannelPruneConfig, data: DataSplits | None) -> torch.Tensor:
    if data is not None:
        return data.train.images[:2]
    if not cfg.input_shape:
        raise ConfigError("structured pruning traces the model on an example input: give the data or "
                          "ChannelPruneConfig(input_shape=(C, H, W))")
    return torch.zeros(2, *cfg.input_shape)


def _masks_of(model: nn.Module) -> Masks:
    return {n: p.detach() != 0 for n, p in prunable_weights(model).items()}


def sparsify(model: nn.Module, config: PruneConfigs, data: DataSplits | None = None, *, seed: int = 0,
          state_path: str | Path | None = None) -> PruneResult:
    """Prune a copy of ``model`` as ``config`` says (see the module docstring); ``model`` is not modified.

    ``state_path`` (schedule only) makes an interrupted schedule resumable.
    """
    if isinstance(config, ScheduleConfig):
        if data is None:
            raise ConfigError("the iterative pruning schedule fine-tunes and evaluates: give the data splits")
        return IterativePruner(model, data, config, seed=seed, state_path=state_path).run()
    out = copy.deepcopy(model)
    if isinstance(config, MagnitudePruneConfig):
        masks, _ = magnitude_masks(prunable_weights(out, config.layers or None), config.scheme, config.sparsity)
        apply_masks(out, masks)
        return PruneResult(model=out, masks=masks, history=[], kept_step=0,
                           stop_reason=f"one-shot {config.scheme} pruning to {config.sparsity:g}")
    if isinstance(config, ChannelPruneConfig):
        example = _example(config, data).to(next(out.parameters()).device)
        prunable_groups(out, example, config.layers or None)  # a clear error for a model without prunable groups
        res = prune_structured(out, example, config.amount, config.importance, config.layers or None,
                               config.round_to)
        return PruneResult(model=out, masks=_masks_of(out), history=[], kept_step=0,
                           stop_reason=f"one-shot structured pruning of {config.amount:g} of the channels",
                           channels=dict(res.channels_after))
    raise ConfigError(f"sparsify takes a MagnitudePruneConfig, ChannelPruneConfig or ScheduleConfig, "
                      f"not {type(config).__name__}")

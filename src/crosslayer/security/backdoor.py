"""BadNets poisoning: Gu, Dolan-Gavitt and Garg, "BadNets: Identifying Vulnerabilities in the Machine
Learning Model Supply Chain", arXiv:1708.06733 (2017).

All-to-one backdoor: a ``patch`` x ``patch`` square of value ``value`` in a corner is stamped on a
seeded ``rate`` share of the training images of other classes, whose labels become ``target``. The
attack success rate (ASR) is the share of triggered test images of other classes classified as
``target``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import ImageDataset
from crosslayer.errors import ConfigError
from crosslayer.train import predict

__all__ = ["BadNetsConfig", "add_trigger", "attack_success_rate", "poison"]


@dataclass(frozen=True, kw_only=True)
class BadNetsConfig(Config):
    """Defaults: 10 % poisoning, target class 0, a white 4x4 patch in the bottom-right corner."""

    rate: float = 0.1
    target: int = 0
    patch: int = 4
    value: float = 1.0
    corner: Literal["bottom-right", "bottom-left", "top-right", "top-left"] = "bottom-right"

    def validate(self) -> None:
        check_range("rate", self.rate, 0.0, 1.0)
        check_range("target", self.target, 0)
        check_range("patch", self.patch, 1)
        check_range("value", self.value, 0.0, 1.0)


def add_trigger(x: torch.Tensor, cfg: BadNetsConfig) -> torch.Tensor:
    """A copy of images ``x`` (N, C, H, W) with the trigger patch stamped in."""
    h, w = x.shape[-2:]
    if cfg.patch > min(h, w):
        raise ConfigError(f"patch = {cfg.patch} is larger than the {h}x{w} images")
    out = x.clone()
    rows = slice(h - cfg.patch, h) if cfg.corner.startswith("bottom") else slice(0, cfg.patch)
    cols = slice(w - cfg.patch, w) if cfg.corner.endswith("right") else slice(0, cfg.patch)
    out[..., rows, cols] = cfg.value
    return out


def poison(ds: ImageDataset, cfg: BadNetsConfig, *, seed: int = 0) -> tuple[ImageDataset, torch.Tensor]:
    """``ds`` with ``rate * len(ds)`` images of other classes triggered and relabelled; also their indices."""
    cfg.validate()
    if cfg.target >= ds.num_classes:
        raise ConfigError(f"target = {cfg.target} is out of range; allowed [0, {ds.num_classes - 1}]")
    candidates = (ds.labels != cfg.target).nonzero().squeeze(1)
    n = min(len(candidates), round(cfg.rate * len(ds)))
    g = torch.Generator().manual_seed(seed)
    idx = candidates[torch.randperm(len(candidates), generator=g)[:n]]
    images, labels = ds.images.clone(), ds.labels.clone()
    images[idx] = add_trigger(images[idx], cfg)
    labels[idx] = cfg.target
    return ImageDataset(ds.name, f"{ds.split}-poisoned", images, labels, ds.classes, ds.source), idx


def attack_success_rate(model: nn.Module, ds: ImageDataset, cfg: BadNetsConfig) -> float:
    """Share of triggered images (true class != target) that the model puts in the target class."""
    keep = ds.labels != cfg.target
    if not bool(keep.any()):
        raise ConfigError("the evaluation set holds only target-class images; ASR is undefined")
    pred = predict(model, add_trigger(ds.images[keep], cfg)).argmax(1)
    return float((pred == cfg.target).float().mean())

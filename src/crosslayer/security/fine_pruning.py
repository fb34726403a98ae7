"""Fine-pruning: Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on
Deep Neural Networks", RAID 2018.

Prune the channels of the last convolutional layer that are dormant on clean data (lowest mean
activation, least active first) while clean validation accuracy stays within ``max_drop_pp`` of the
start (Liu et al.: 4 pp) and at most ``max_fraction`` of the channels, then fine-tune on clean data
with the pruned channels held at zero. A backdoor hiding in dormant channels loses them; fine-tuning
overwrites what is left. Activity is the mean *absolute* activation, which equals the paper's mean
post-ReLU activation when the layer feeds a ReLU and still ranks "quiet" channels when it does not
(the Caffe LeNet-5 has no ReLU after its convolutions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from crosslayer.config import MAX_BATCH, MAX_EPOCHS, Config, check_range
from crosslayer.data import ImageDataset
from crosslayer.errors import ModelError
from crosslayer.train import TrainConfig, evaluate, fit

__all__ = ["FinePruneConfig", "FinePruneResult", "channel_activity", "fine_prune", "last_conv"]


@dataclass(frozen=True, kw_only=True)
class FinePruneConfig(Config):
    """Defaults: last conv layer, up to 90 % of its channels, 4 pp drop allowed, 2 epochs of fine-tuning."""

    layer: str = ""
    max_fraction: float = 0.9
    max_drop_pp: float = 4.0
    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 64

    def validate(self) -> None:
        check_range("max_fraction", self.max_fraction, 0.0, 1.0)
        check_range("max_drop_pp", self.max_drop_pp, 0.0, 100.0)
        check_range("epochs", self.epochs, 0, MAX_EPOCHS)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, MAX_BATCH)


@dataclass
class FinePruneResult:
    layer: str
    pruned: list[int]
    channels: int
    val_accuracy_start: float
    val_accuracy_pruned: float
    val_accuracy_final: float
    activity: list[float] = field(default_factory=list)


def last_conv(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ModelError("fine-pruning needs a convolutional layer; the model has none")
    return names[-1]


def _conv(model: nn.Module, name: str) -> nn.Conv2d:
    mods = dict(model.named_modules())
    if name not in mods or not isinstance(mods[name], nn.Conv2d):
        convs = [n for n, m in mods.items() if isinstance(m, nn.Conv2d)]
        raise ModelError(f"layer {name!r} is not a Conv2d of the model; choose one of {', '.join(convs)}")
    conv = mods[name]
    assert isinstance(conv, nn.Conv2d)
    return conv


@torch.no_grad()
def channel_activity(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Mean absolute activation per output channel of ``layer`` on ``images``."""
    conv = _conv(model, layer)
    total = torch.zeros(conv.out_channels)
    acts: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, out: acts.append(out.detach().abs().mean((0, 2, 3)).cpu()))
    try:
        model.eval()
        dev = conv.weight.device
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size].to(dev))
            total += acts.pop() * len(images[i:i + batch_size])
    finally:
        handle.remove()
    return total / max(1, len(images))


def _apply_mask(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    with torch.no_grad():
        conv.weight.mul_(keep.view(-1, 1, 1, 1).to(conv.weight))
        if conv.bias is not None:
            conv.bias.mul_(keep.to(conv.bias))


def fine_prune(model: nn.Module, clean_train: ImageDataset, clean_val: ImageDataset, cfg: FinePruneConfig, *,
               seed: int = 0) -> FinePruneResult:
    """Prune dormant channels of ``cfg.layer`` (default: the last conv), then fine-tune; ``model`` changes in place."""
    cfg.validate()
    name = cfg.layer or last_conv(model)
    conv = _conv(model, name)
    activity = channel_activity(model, name, clean_val.images)
    order = activity.argsort().tolist()
    start = evaluate(model, clean_val).accuracy
    keep = torch.ones(conv.out_channels, dtype=torch.bool)
    pruned: list[int] = []
    acc = start
    limit = int(cfg.max_fraction * conv.out_channels)
    saved_w, saved_b = conv.weight.detach().clone(), None if conv.bias is None else conv.bias.detach().clone()
    for ch in order[:limit]:
        keep[ch] = False
        _apply_mask(conv, keep)
        new_acc = evaluate(model, clean_val).accuracy
        if (start - new_acc) * 100 > cfg.max_drop_pp:
            keep[ch] = True  # undo the channel that broke the accuracy budget, stop
            with torch.no_grad():
                conv.weight.copy_(saved_w * keep.view(-1, 1, 1, 1))
                if saved_b is not None and conv.bias is not None:
                    conv.bias.copy_(saved_b * keep)
            break
        pruned.append(ch)
        acc = new_acc
    train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, schedule="cosine")
    if cfg.epochs:
        fit(model, clean_train, clean_val, dataclasses.replace(train_cfg), seed=seed,
            on_step=lambda _m: _apply_mask(conv, keep), desc="fine-pruning")
    final = evaluate(model, clean_val).accuracy
    return FinePruneResult(name, pruned, conv.out_channels, start, acc, final, activity.tolist())

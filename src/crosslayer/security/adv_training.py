"""PGD adversarial training: Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018.

The min-max objective, trained through :func:`crosslayer.train.fit` with a ``loss_fn`` that replaces
each mini-batch by its PGD examples (``clean_weight`` mixes in the clean loss; 0 = Madry et al.).
``ramp_steps`` grows epsilon linearly from 0 over the first optimizer steps, which small networks need
to leave the trivial "predict one class" solution at large epsilon.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.config import check_range
from crosslayer.data import ImageDataset
from crosslayer.security.pgd import PGDConfig, pgd
from crosslayer.train import LossFn, TrainConfig, TrainResult, fit

__all__ = ["adversarial_loss", "adversarial_train"]


def adversarial_loss(attack: PGDConfig, *, seed: int = 0, clean_weight: float = 0.0,
                     ramp_steps: int = 0) -> LossFn:
    """A ``loss_fn(model, x, y)`` for :func:`fit`: cross-entropy on PGD examples of the batch."""
    attack.validate()
    check_range("clean_weight", clean_weight, 0.0, 1.0)
    check_range("ramp_steps", ramp_steps, 0)
    gen = torch.Generator().manual_seed(seed)
    step = [0]

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        step[0] += 1
        scale = min(1.0, step[0] / ramp_steps) if ramp_steps else 1.0
        cfg = dataclasses.replace(attack, eps=attack.eps * scale,
                                  alpha=attack.step_size * scale)
        was_training = model.training
        model.eval()
        adv = pgd(model, x, y, cfg, gen=gen) if cfg.eps > 0 else x
        model.train(was_training)
        loss = F.cross_entropy(model(adv), y)
        if clean_weight > 0:
            loss = (1 - clean_weight) * loss + clean_weight * F.cross_entropy(model(x), y)
        return loss

    return loss_fn


def adversarial_train(model: nn.Module, train: ImageDataset, val: ImageDataset, cfg: TrainConfig,
                      attack: PGDConfig, *, seed: int = 0, clean_weight: float = 0.0,
                      ramp_epochs: float = 0.0, keep_best: bool = False) -> TrainResult:
    """Train ``model`` in place on PGD examples; it ends holding the last epoch's weights.

    ``keep_best=True`` keeps the best *clean* validation epoch instead, which favours the start model and
    the early, small-epsilon epochs of the ramp over the robust end of training (Madry et al. keep the last).
    """
    batches = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    loss_fn = adversarial_loss(attack, seed=seed, clean_weight=clean_weight, ramp_steps=int(ramp_epochs * batches))
    return fit(model, train, val, cfg, seed=seed, loss_fn=loss_fn, desc="adversarial training", keep_best=keep_best)

"""The verbs of the security step (survey Section V): :func:`attack` a model, :func:`defend` it and measure the
defence against an oblivious and an adaptive attacker, plant a :func:`backdoor` and remove it.

Each takes the model first, then one config, then its inputs; images live in ``[0, 1]`` (wrap a model
trained on normalised inputs in :class:`~crosslayer.security.base.Normalized`). The model passed in is never
modified: attacks freeze it and restore its mode, defences and backdoors work on copies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.security.adv_training import adversarial_train
from crosslayer.security.backdoor import BadNetsConfig
from crosslayer.security.base import AttackResult, check_inputs
from crosslayer.security.defence_eval import evaluate_defence
from crosslayer.security.experiments import DEFENCES, BackdoorResult, backdoor_experiment, make_defence
from crosslayer.security.fine_pruning import FinePruneConfig
from crosslayer.security.pgd import PGDConfig
from crosslayer.security.registry import run_attack
from crosslayer.security.transforms import Defended
from crosslayer.train import TrainConfig

__all__ = ["ALL_DEFENCES", "BackdoorConfig", "BackdoorResult", "DefenceConfig", "DefenceResult", "attack", "backdoor",
           "defend"]

ALL_DEFENCES = (*DEFENCES, "adv-train")


def attack(model: nn.Module, config: Any, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
           target: torch.Tensor | None = None, batch_size: int = 1000, with_ssim: bool = True) -> AttackResult:
    """Attack ``model`` on ``images`` (N, C, H, W in [0, 1]) with their ``labels``.

    The config's type picks the attack: :class:`~crosslayer.security.FGSMConfig`, ``PGDConfig``,
    ``JSMAConfig``, ``CWConfig``, ``HopSkipJumpConfig``, ``REDAttackConfig`` or ``TrISecConfig`` (or
    ``attack_config("pgd", eps=0.3)``). Targeted attacks (JSMA, TrISec) aim at ``target``, by default the
    next class. The result holds the adversarial images and the success rate, robust accuracy, L0 / L2 /
    L-inf norms, SSIM and queries.
    """
    return run_attack(model, images, labels, config, seed=seed, target=target, batch_size=batch_size,
                      with_ssim=with_ssim)


@dataclass(frozen=True, kw_only=True)
class DefenceConfig(Config):
    """An input defence, or adversarial training, and the PGD attack that measures it.

    ``defence``: ``quantize`` (QuSecNets-style input quantization to ``levels``), ``learned-quantize`` (its
    thresholds learned on ``calibration_images`` validation images, 0 = all), ``random-quantize`` (with
    ``dither``), ``median`` / ``lowpass`` (``size`` x ``size`` filters, the low-pass of width ``sigma``), or
    ``adv-train`` (Madry et al.: ``epochs`` of PGD-``train_steps`` training at the attack's epsilon, Adam at
    ``lr``). ``attack``: the evaluation attack; against a random defence it averages ``eot_samples`` gradients
    (Expectation over Transformation).
    """

    defence: str = "quantize"
    levels: int = 2
    size: int = 3
    sigma: float = 1.0
    dither: float = 0.1
    attack: PGDConfig = field(default_factory=lambda: PGDConfig(eps=0.2, steps=20))
    eot_samples: int = 8
    calibration_images: int = 0
    epochs: int = 5
    lr: float = 0.001
    train_steps: int = 7

    def validate(self) -> None:
        if self.defence not in ALL_DEFENCES:
            raise ConfigError(f"unknown defence {self.defence!r}; allowed: {', '.join(ALL_DEFENCES)}")
        check_range("levels", self.levels, 2, 256)
        check_range("size", self.size, 1, 31)
        check_range("sigma", self.sigma, 0.0, lo_open=True)
        check_range("dither", self.dither, 0.0, 1.0, hi_open=True)
        check_range("eot_samples", self.eot_samples, 1)
        check_range("calibration_images", self.calibration_images, 0)
        check_range("epochs", self.epochs, 1)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("train_steps", self.train_steps, 1)


@dataclass
class DefenceResult:
    """A defended model and its accuracies (fractions) on the evaluation images.

    ``model``: the classifier behind the input defence (:class:`~crosslayer.security.transforms.Defended`), or
    the adversarially trained copy. ``undefended_robust_accuracy``: the attack on the bare model;
    ``nonadaptive_robust_accuracy``: those same examples fed to the defended model (an attacker who ignores
    the defence); ``adaptive_robust_accuracy``: the attack on the defended model end to end (BPDA through
    non-differentiable transforms, EOT over random ones; Athalye et al., ICML 2018). Only the adaptive figure
    measures robustness.
    """

    defence: str
    model: nn.Module
    clean_accuracy: float
    defended_clean_accuracy: float
    undefended_robust_accuracy: float
    nonadaptive_robust_accuracy: float
    adaptive_robust_accuracy: float

    def metrics(self) -> dict[str, Any]:
        return {"defence": self.defence, "clean_accuracy": self.clean_accuracy,
                "defended_clean_accuracy": self.defended_clean_accuracy,
                "undefended_robust_accuracy": self.undefended_robust_accuracy,
                "nonadaptive_robust_accuracy": self.nonadaptive_robust_accuracy,
                "adaptive_robust_accuracy": self.adaptive_robust_accuracy}


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        acc = float((model(x.to(dev)).argmax(1).cpu() == y).float().mean())
    model.train(was)
    return acc


def _adv_train(model: nn.Module, config: DefenceConfig, images: torch.Tensor, labels: torch.Tensor,
               data: DataSplits, seed: int) -> DefenceResult:
    base = run_attack(model, images, labels, config.attack, seed=seed, with_ssim=False)
    robust = copy.deepcopy(model)
    adversarial_train(robust, data.train, data.val, TrainConfig(epochs=config.epochs, lr=config.lr, optimizer="adam",
                                                                weight_decay=0.0),
                      PGDConfig(eps=config.attack.eps, steps=config.train_steps), seed=seed,
                      ramp_epochs=min(2.0, config.epochs / 2))
    robust.eval()
    # adversarial training hides no gradient: the white-box attack on the trained model is the adaptive one
    after = run_attack(robust, images, labels, config.attack, seed=seed, with_ssim=False)
    return DefenceResult(config.defence, robust, base.metrics["clean_accuracy"], after.metrics["clean_accuracy"],
                         base.metrics["robust_accuracy"], _accuracy(robust, base.adv, labels),
                         after.metrics["robust_accuracy"])


def defend(model: nn.Module, config: DefenceConfig, images: torch.Tensor, labels: torch.Tensor, *,
           data: DataSplits | None = None, seed: int = 0) -> DefenceResult:
    """Defend ``model`` as ``config`` says and attack it on ``images`` / ``labels`` (test images: they only
    measure). ``data`` gives the validation images ``learned-quantize`` learns its thresholds on and the
    training images of ``adv-train``."""
    check_inputs(model, images, labels)
    if config.defence in ("adv-train", "learned-quantize") and data is None:
        raise ConfigError(f"defence {config.defence!r} learns from data: pass data= (its training / validation "
                          "splits; the evaluation images are never learned from)")
    if config.defence == "adv-train":
        assert data is not None
        return _adv_train(model, config, images, labels, data, seed)
    calib = None
    if data is not None:
        calib = data.val.subset(config.calibration_images) if config.calibration_images else data.val
    transform = make_defence(config.defence, levels=config.levels, size=config.size, sigma=config.sigma,
                             dither=config.dither, model=model, calib=calib, eps=config.attack.eps, seed=seed)
    r = evaluate_defence(model, transform, images, labels, config.attack, seed=seed, eot_samples=config.eot_samples)
    return DefenceResult(config.defence, Defended(transform, model), r["clean_accuracy"], r["defended_clean_accuracy"],
                         r["undefended_robust_accuracy"], r["nonadaptive_robust_accuracy"],
                         r["adaptive_robust_accuracy"])


def _backdoor_train() -> TrainConfig:
    return TrainConfig(epochs=4, lr=0.002, optimizer="adam", weight_decay=0.0)


@dataclass(frozen=True, kw_only=True)
class BackdoorConfig(Config):
    """The BadNets poisoning (``badnets``), the attacker's training on the poisoned set (``train``) and the
    defender's fine-pruning on clean data (``fine_prune``)."""

    badnets: BadNetsConfig = field(default_factory=BadNetsConfig)
    train: TrainConfig = field(default_factory=_backdoor_train)
    fine_prune: FinePruneConfig = field(default_factory=FinePruneConfig)


def backdoor(model: nn.Module, config: BackdoorConfig, data: DataSplits, *, seed: int = 0,
             init_state: dict[str, torch.Tensor] | None = None) -> BackdoorResult:
    """BadNets (Gu et al., 2017) then fine-pruning (Liu et al., RAID 2018) on a copy of ``model``: the copy is
    re-initialised (or set to ``init_state``), trained on the poisoned training split, then fine-pruned on the
    clean one; clean accuracy and attack success rate on the test split before and after."""
    return backdoor_experiment(model, data, config.badnets, config.train, config.fine_prune, seed=seed,
                               init_state=init_state)

"""Security of DNNs at the edge (survey section V): adversarial attacks, input defences with
non-adaptive and adaptive (BPDA / EOT) evaluation, adversarial training, BadNets backdoors and
fine-pruning, and robust accuracy across the flow's compressed models.

The verbs (:mod:`crosslayer.security.api`): ``attack(model, config, images, labels, seed=...)`` with ``config``
one of the attack configs below (or ``attack_config("pgd", eps=0.3)``), ``defend(model, DefenceConfig(...),
images, labels, data=...)`` and ``backdoor(model, BackdoorConfig(...), data)``; images live in [0, 1].
"""

from __future__ import annotations

from crosslayer.security.adv_training import adversarial_loss, adversarial_train
from crosslayer.security.api import (
    BackdoorConfig,
    BackdoorResult,
    DefenceConfig,
    DefenceResult,
    attack,
    backdoor,
    defend,
)
from crosslayer.security.backdoor import BadNetsConfig, add_trigger, attack_success_rate, poison
from crosslayer.security.base import AttackResult, Normalized, check_eps, check_inputs, summarize
from crosslayer.security.cw import CWConfig, cw_l2
from crosslayer.security.defence_eval import evaluate_defence
from crosslayer.security.fgsm import FGSMConfig, fgsm
from crosslayer.security.fine_pruning import FinePruneConfig, FinePruneResult, fine_prune
from crosslayer.security.hopskipjump import HopSkipJumpConfig, hopskipjump
from crosslayer.security.jsma import JSMAConfig, jsma
from crosslayer.security.learned_quant import learn_thresholds
from crosslayer.security.pgd import PGDConfig, pgd
from crosslayer.security.red_attack import REDAttackConfig, red_attack
from crosslayer.security.registry import ATTACKS, attack_config, run_attack
from crosslayer.security.robustness import RobustnessCurves, robustness_curves
from crosslayer.security.transforms import Defended, InputQuantization, LowPassFilter, MedianFilter, bpda
from crosslayer.security.trisec import TrISecConfig, trisec

__all__ = ["ATTACKS", "AttackResult", "BackdoorConfig", "BackdoorResult", "BadNetsConfig", "CWConfig", "DefenceConfig",
           "DefenceResult", "Defended", "FGSMConfig", "FinePruneConfig", "FinePruneResult", "HopSkipJumpConfig",
           "InputQuantization", "JSMAConfig", "LowPassFilter", "MedianFilter", "Normalized", "PGDConfig",
           "REDAttackConfig", "RobustnessCurves", "TrISecConfig", "add_trigger", "adversarial_loss",
           "adversarial_train", "attack", "attack_config", "attack_success_rate", "backdoor", "bpda", "check_eps",
           "check_inputs", "cw_l2", "defend", "evaluate_defence", "fgsm", "fine_prune", "hopskipjump", "jsma",
           "learn_thresholds", "pgd", "poison", "red_attack", "robustness_curves", "run_attack", "summarize", "trisec"]

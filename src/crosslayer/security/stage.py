"""Flow stage ``security``: robust accuracy vs epsilon of every model the flow published, input
defences under non-adaptive and adaptive attack, a small table of every attack, and an optional
BadNets + fine-pruning demo; a thin caller of the verbs of :mod:`crosslayer.security.api`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.report import Report
from crosslayer.security.api import BackdoorConfig, DefenceConfig, attack, backdoor, defend
from crosslayer.security.backdoor import BadNetsConfig
from crosslayer.security.base import check_eps
from crosslayer.security.experiments import DEFENCES
from crosslayer.security.fine_pruning import FinePruneConfig
from crosslayer.security.pgd import PGDConfig
from crosslayer.security.plots import robustness_figure
from crosslayer.security.registry import ATTACKS, attack_config
from crosslayer.security.robustness import robustness_curves
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import TrainConfig, evaluate

__all__ = ["SecurityConfig"]

FLOW_MODELS = ("baseline", "pruned", "quantized", "approximate")
# light per-attack settings for the stage's overview table (the CLI runs the full defaults)
LIGHT_ATTACKS: dict[str, dict[str, Any]] = {
    "fgsm": {"eps": 0.2}, "pgd": {"eps": 0.2, "steps": 20}, "jsma": {"gamma": 0.1}, "cw": {"steps": 50,
    "search_steps": 3}, "hopskipjump": {"max_queries": 300}, "red": {"max_queries": 150}, "trisec": {"steps": 100},
}


@dataclass(frozen=True, kw_only=True)
class SecurityConfig(Config):
    """Light defaults: PGD-10 (L-inf) on 500 test images at 5 epsilons for each flow model; three input
    defences on 200 images at eps 0.2; each attack on 10 images; BadNets demo off (``backdoor = true``)."""

    images: int = 500
    attack: Literal["fgsm", "pgd"] = "pgd"
    steps: int = 10
    eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
    defences: tuple[str, ...] = ("quantize", "median", "lowpass")
    defence_images: int = 200
    defence_eps: float = 0.2
    table_attacks: tuple[str, ...] = ("fgsm", "pgd", "jsma", "cw", "hopskipjump", "red", "trisec")
    table_images: int = 10
    backdoor: bool = False
    backdoor_rate: float = 0.1
    backdoor_epochs: int = 3
    fine_prune_epochs: int = 2

    def validate(self) -> None:
        check_range("images", self.images, 1)
        check_range("steps", self.steps, 1)
        check_range("defence_images", self.defence_images, 0)
        check_range("table_images", self.table_images, 0)
        check_range("backdoor_rate", self.backdoor_rate, 0.0, 1.0)
        check_range("backdoor_epochs", self.backdoor_epochs, 1)
        check_range("fine_prune_epochs", self.fine_prune_epochs, 0)
        for i, e in enumerate(self.eps):
            check_eps(e, "linf", name=f"eps[{i}]")
        check_eps(self.defence_eps, "linf", name="defence_eps")
        bad = [d for d in self.defences if d not in DEFENCES]
        if bad:
            raise ConfigError(f"defences: unknown {', '.join(map(repr, bad))}; allowed: {', '.join(DEFENCES)}")
        bad = [a for a in self.table_attacks if a not in ATTACKS]
        if bad:
            raise ConfigError(f"table_attacks: unknown {', '.join(map(repr, bad))}; allowed: {', '.join(ATTACKS)}")


def _flow_models(ctx: StageContext, rep: Report) -> dict[str, torch.nn.Module]:
    models = {k: ctx.models[k] for k in FLOW_MODELS if k in ctx.models}
    missing = [k for k in FLOW_MODELS if k not in ctx.models]
    if missing:
        rep.notes.append(f"flow models not published by earlier stages (skipped): {', '.join(missing)}")
    if not models:
        models = {"current": ctx.model}
        rep.notes.append("no flow models published; the current model is attacked alone")
    return models


def _curves(ctx: StageContext, cfg: SecurityConfig, rep: Report, models: dict[str, torch.nn.Module]) -> None:
    x, y = ctx.data.test.images[:cfg.images], ctx.data.test.labels[:cfg.images]
    curves = robustness_curves(models, x, y, cfg.eps, attack=cfg.attack, steps=cfg.steps, seed=ctx.seed)
    name = "FGSM" if cfg.attack == "fgsm" else f"PGD-{cfg.steps}"
    for m, accs in curves.accuracy.items():
        for e, a in zip(curves.eps, accs, strict=True):
            rep.metrics[f"robust_accuracy_{m}_eps{e:g}"] = a
    if curves.transferred:
        rep.notes.append(f"no input gradient through {', '.join(curves.transferred)}: attacked by transfer from "
                         f"the first differentiable model (an upper bound on their robustness)")
    rep.add_table(f"Robust accuracy under {name} (L-inf), {len(x)} test images",
                  ["model", *[f"eps {e:g}" for e in curves.eps]],
                  [[m, *accs] for m, accs in curves.accuracy.items()])
    rep.figures.append(robustness_figure(curves, name))


def _defences(ctx: StageContext, cfg: SecurityConfig, rep: Report) -> None:
    n = cfg.defence_images
    x, y = ctx.data.test.images[:n], ctx.data.test.labels[:n]
    rows = []
    for d in cfg.defences:
        r = defend(ctx.model, DefenceConfig(defence=d, attack=PGDConfig(eps=cfg.defence_eps, steps=cfg.steps)), x, y,
                   data=ctx.data, seed=ctx.seed)
        rows.append([d, r.defended_clean_accuracy, r.undefended_robust_accuracy, r.nonadaptive_robust_accuracy,
                     r.adaptive_robust_accuracy])
        key = d.replace("-", "_")
        rep.metrics[f"defence_{key}_nonadaptive_robust_accuracy"] = r.nonadaptive_robust_accuracy
        rep.metrics[f"defence_{key}_adaptive_robust_accuracy"] = r.adaptive_robust_accuracy
    rep.add_table(f"Input defences of the current model, PGD-{cfg.steps} eps {cfg.defence_eps:g}, {n} images "
                  "(adaptive = BPDA / EOT, Athalye et al. 2018)",
                  ["defence", "clean acc", "no defence", "non-adaptive", "adaptive"], rows)


def _attack_table(ctx: StageContext, cfg: SecurityConfig, rep: Report) -> None:
    n = cfg.table_images
    x, y = ctx.data.test.images[:n], ctx.data.test.labels[:n]
    rows = []
    for a in cfg.table_attacks:
        m = attack(ctx.model, attack_config(a, **LIGHT_ATTACKS.get(a, {})), x, y, seed=ctx.seed).metrics
        rows.append([a, m["success_rate"], m["mean_l0"], m["mean_l2"], m["mean_linf"], m["mean_ssim"],
                     m.get("mean_queries", "")])
        rep.metrics[f"attack_{a}_success_rate"] = m["success_rate"]
    rep.add_table(f"Attacks on the current model ({n} test images; light settings; JSMA and TrISec targeted at "
                  "class y+1)", ["attack", "success", "L0", "L2", "Linf", "SSIM", "queries"], rows)


def _backdoor(ctx: StageContext, cfg: SecurityConfig, rep: Report) -> None:
    out = backdoor(ctx.models.get("baseline", ctx.model), BackdoorConfig(
        badnets=BadNetsConfig(rate=cfg.backdoor_rate),
        train=TrainConfig(epochs=cfg.backdoor_epochs, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0),
        fine_prune=FinePruneConfig(epochs=cfg.fine_prune_epochs)), ctx.data, seed=ctx.seed)
    rep.metrics.update(out.metrics())
    rep.add_table("BadNets backdoor and fine-pruning (Liu et al., 2018)", ["", "clean accuracy", "attack success rate"],
                  [["poisoned model", out.clean_accuracy_before, out.asr_before],
                   ["after fine-pruning", out.clean_accuracy_after, out.asr_after]])


@register_stage("security", SecurityConfig, "attacks, defences (non-adaptive and adaptive), backdoors, robustness")
def security_stage(ctx: StageContext, cfg: SecurityConfig) -> StageResult:
    rep = Report("security")
    rep.metrics["test_accuracy"] = evaluate(ctx.model, ctx.data.test).accuracy
    _curves(ctx, cfg, rep, _flow_models(ctx, rep))
    if cfg.defences and cfg.defence_images:
        _defences(ctx, cfg, rep)
    if cfg.table_attacks and cfg.table_images:
        _attack_table(ctx, cfg, rep)
    if cfg.backdoor:
        _backdoor(ctx, cfg, rep)
    else:
        rep.notes.append("BadNets demo skipped (set backdoor = true in [security] to run it)")
    return StageResult(report=rep)

"""Flow stage ``explore``: the sparsity × bit-width × scheme sweep, its Pareto front (accuracy vs.
storage), the survey's Fig. 7 and Fig. 8 as plots, and the best point within the accuracy budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.explore.pareto import pareto_front
from crosslayer.explore.sweep import DesignPoint, sweep
from crosslayer.prune import SCHEMES
from crosslayer.report import Figure, Report
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import TrainConfig, evaluate, within_budget

__all__ = ["ExploreConfig", "fig7", "fig8"]


@dataclass(frozen=True, kw_only=True)
class ExploreConfig(Config):
    """The grid to sweep and the fine-tuning each pruned point gets."""

    schemes: tuple[str, ...] = SCHEMES
    sparsities: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
    bits: tuple[int, ...] = (8, 6, 4)
    act_bits: int = 8
    finetune_epochs: int = 1
    finetune_lr: float = 0.001
    finetune_limit: int = 0
    budget_pp: float = 0.5

    def validate(self) -> None:
        for s in self.schemes:
            if s not in SCHEMES:
                raise ConfigError(f"schemes: {s!r} is not allowed; choose from {', '.join(SCHEMES)}")
        if not self.sparsities or not self.bits:
            raise ConfigError("sparsities and bits must each list at least one value")
        for sp in self.sparsities:
            check_range("sparsities[]", sp, 0.0, 1.0, hi_open=True)
        for b in self.bits:
            check_range("bits[]", b, 2, 16)
        check_range("act_bits", self.act_bits, 2, 16)
        check_range("finetune_epochs", self.finetune_epochs, 0)
        check_range("finetune_lr", self.finetune_lr, 0.0, lo_open=True)
        check_range("finetune_limit", self.finetune_limit, 0)
        check_range("budget_pp", self.budget_pp, 0.0, 100.0)


def fig7(points: list[DesignPoint], baseline: float) -> Figure:
    """Accuracy vs. compression of the float pruned points, one line per scheme (survey Fig. 7)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    for scheme in sorted({p.scheme for p in points}):
        pts = sorted((p for p in points if p.scheme == scheme and p.weight_bits == 32), key=lambda p: p.sparsity)
        ax.plot([100 * p.sparsity for p in pts], [100 * p.test_accuracy for p in pts], marker="o", label=scheme)
    ax.axhline(100 * baseline, color="grey", ls="--", lw=1, label="baseline")
    ax.set_xlabel("weights pruned (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Pruning schemes (fine-tuned)")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_figure(fig, "Accuracy vs. pruning for the three schemes (cf. survey Fig. 7)")


def fig8(points: list[DesignPoint], front: list[int]) -> Figure:
    """Accuracy vs. storage of every point, coloured by bit width, Pareto front drawn (survey Fig. 8)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    for b in sorted({p.weight_bits for p in points}):
        pts = [p for p in points if p.weight_bits == b]
        ax.scatter([p.storage_bits / 8e3 for p in pts], [100 * p.test_accuracy for p in pts], s=18,
                   label="float" if b == 32 else f"{b}-bit")
    fr = [points[i] for i in front]
    fr.sort(key=lambda p: p.storage_bits)
    ax.plot([p.storage_bits / 8e3 for p in fr], [100 * p.test_accuracy for p in fr], "k-", lw=1.2,
            label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("weight storage (KB, indices included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Pruning × quantization design space")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_figure(fig, "Pareto front of pruning × quantization (cf. survey Fig. 8)")


@register_stage("explore", ExploreConfig, "sweep sparsity × bit width × scheme and draw the Pareto front")
def explore_stage(ctx: StageContext, cfg: ExploreConfig) -> StageResult:
    rep = Report("explore")
    base = ctx.models.get("baseline", ctx.model)
    if "baseline" not in ctx.models:
        rep.notes.append("no baseline model published: exploring from the current model")
    base = base.cpu().eval()
    base_acc = evaluate(base, ctx.data.test).accuracy
    ft = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, optimizer="adam", weight_decay=0.0)
    points = sweep(base, ctx.data, schemes=cfg.schemes, sparsities=cfg.sparsities, bits=cfg.bits, finetune=ft,
                   act_bits=cfg.act_bits, seed=ctx.seed, finetune_limit=cfg.finetune_limit)
    front = pareto_front([[p.test_accuracy, p.storage_bits] for p in points], maximize=[True, False])
    rep.figures += [fig7(points, base_acc), fig8(points, front)]
    rows: list[list[Any]] = [[p.scheme, round(p.sparsity, 4), p.weight_bits, p.test_accuracy, p.storage_bits,
                              p.compression_ratio, p.nonzero_macs, "yes" if i in front else ""]
                             for i, p in enumerate(points)]
    rep.add_table("Design points", ["scheme", "sparsity", "weight bits", "test accuracy", "storage bits",
                                    "compression", "non-zero MACs", "Pareto"], rows)
    within = [p for p in points if within_budget(100 * (base_acc - p.test_accuracy), cfg.budget_pp)]
    best = min(within, key=lambda p: p.storage_bits) if within else max(points, key=lambda p: p.test_accuracy)
    rep.metrics.update({"baseline_accuracy": base_acc, "points": len(points), "pareto_points": len(front),
                        "test_accuracy": best.test_accuracy, "sparsity": best.sparsity,
                        "weight_bits": best.weight_bits, "weight_bits_total": best.storage_bits,
                        "compression_ratio": best.compression_ratio, "scheme": best.scheme,
                        "macs": best.macs, "nonzero_macs": best.nonzero_macs, "budget_pp": cfg.budget_pp})
    rep.notes.append(f"best point within {cfg.budget_pp} pp of the baseline: {best.scheme}, sparsity "
                     f"{best.sparsity:.3f}, {best.weight_bits}-bit weights, {best.compression_ratio:.1f}x "
                     "(storage counts values, relative indices with fillers and scales)")
    return StageResult(report=rep, artifacts={"pareto_points": [p.to_json() for p in points],
                                              "pareto_front": front})
from crosslayer.explore import search_stage as _search_stage  # noqa: E402,F401  (registers the search stage)

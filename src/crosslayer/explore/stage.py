"""Flow stage ``explore``: the sparsity × bit-width × scheme sweep, its Pareto front (accuracy vs.
storage), the survey's Fig. 7 and Fig. 8 as plots, and the best point within the accuracy budget; a thin
caller of :func:`~crosslayer.explore.api.pareto_sweep`."""

from __future__ import annotations

from typing import Any

from crosslayer.explore.api import ExploreConfig, pareto_sweep
from crosslayer.explore.plots import fig7, fig8
from crosslayer.report import Report
from crosslayer.stage import PARETO_FRONT, PARETO_POINTS, StageContext, StageResult, register_stage

__all__ = ["ExploreConfig", "fig7", "fig8"]


@register_stage("explore", ExploreConfig, "sweep sparsity × bit width × scheme and draw the Pareto front")
def explore_stage(ctx: StageContext, cfg: ExploreConfig) -> StageResult:
    rep = Report("explore")
    if "baseline" not in ctx.models:
        rep.notes.append("no baseline model published: exploring from the current model")
    res = pareto_sweep(ctx.models.get("baseline", ctx.model), cfg, ctx.data, seed=ctx.seed)
    points, front, best = res.points, res.front, res.best_point
    rep.figures += [fig7(points, res.baseline_accuracy), fig8(points, front)]
    rows: list[list[Any]] = [[p.scheme, round(p.sparsity, 4), p.weight_bits, p.val_accuracy, p.test_accuracy,
                              p.storage_bits, p.compression_ratio, p.nonzero_macs, "yes" if i in front else ""]
                             for i, p in enumerate(points)]
    rep.add_table("Design points", ["scheme", "sparsity", "weight bits", "val accuracy", "test accuracy",
                                    "storage bits", "compression", "non-zero MACs", "Pareto"], rows)
    rep.metrics.update({"baseline_accuracy": res.baseline_accuracy, "baseline_val_accuracy": res.baseline_val_accuracy,
                        "points": len(points), "pareto_points": len(front),
                        "test_accuracy": best.test_accuracy, "val_accuracy": best.val_accuracy,
                        "sparsity": best.sparsity, "weight_bits": best.weight_bits,
                        "weight_bits_total": best.storage_bits, "compression_ratio": best.compression_ratio,
                        "scheme": best.scheme, "macs": best.macs, "nonzero_macs": best.nonzero_macs,
                        "budget_pp": cfg.budget_pp, "best_within_budget": res.best_within_budget})
    how = (f"the smallest within {cfg.budget_pp} pp of the baseline's validation accuracy" if res.best_within_budget
           else f"no point within {cfg.budget_pp} pp on validation: the most accurate one there")
    rep.notes.append(f"best point ({how}; chosen on the validation split, measured on test): {best.scheme}, "
                     f"sparsity {best.sparsity:.3f}, {best.weight_bits}-bit weights, {best.compression_ratio:.1f}x "
                     "(storage counts values, relative indices with fillers and scales)")
    return StageResult(report=rep, artifacts={PARETO_POINTS.name: [p.to_json() for p in points],
                                              PARETO_FRONT.name: front})
from crosslayer.explore import search_stage as _search_stage  # noqa: E402,F401  (registers the search stage)

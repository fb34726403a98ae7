"""Flow stage ``search``: the hardware-aware co-design search (:func:`crosslayer.explore.search.search`) on the
baseline model, its study in the stage folder (or the configured storage), the sequential flow's result drawn on
the same axes when the flow ran it, and the reported point as the new current model."""

from __future__ import annotations

import copy
from typing import Any

from crosslayer.explore.search import SearchConfig, SearchResult, search
from crosslayer.explore.search_eval import HardwareTarget, Measured, measure_model
from crosslayer.explore.search_report import fill_report
from crosslayer.fileio import atomic_write_json
from crosslayer.hw import load_accelerator
from crosslayer.quant import QuantLayer
from crosslayer.report import Report
from crosslayer.stage import MULTIPLIER_ASSIGNMENT, StageContext, StageResult, register_stage

__all__ = ["search_stage", "sequential_point"]


def sequential_point(ctx: StageContext, cfg: SearchConfig, notes: list[str]) -> dict[str, float] | None:
    """The sequential flow's result (the model the quantize stage published, else the current model, with the
    approximate stage's multipliers) measured like a search point, on the test split; None when the flow did not
    quantize."""
    model = ctx.models.get("quantized", ctx.model)
    if not any(isinstance(m, QuantLayer) for m in model.modules()):
        notes.append("the flow did not quantize before the search: no sequential-flow point to compare")
        return None
    raw = ctx.get(MULTIPLIER_ASSIGNMENT) or {}
    assignment = {str(k): str(v["name"]) for k, v in raw.items() if isinstance(v, dict) and "name" in v}
    if not raw:
        notes.append("no multiplier_assignment artifact (approximate stage not run): the sequential point uses exact "
                     "multipliers")
    hw = HardwareTarget(load_accelerator(cfg.accelerator), ctx.data.val.images[:cfg.hw_samples], skip=cfg.skip)
    m: Measured = measure_model(copy.deepcopy(model).cpu(), assignment, ctx.data.test, hw)
    stages = [s for s in ("prune", "quantize", "approximate") if s in ctx.reports]
    notes.append(f"sequential flow ({' -> '.join(stages) or 'current model'}): test accuracy {m.accuracy:.4f}, energy "
                 f"{m.energy:.4g}, measured exactly as the search's points")
    return {"test_accuracy": m.accuracy, "energy": m.energy, "latency_ms": m.latency_ms, "size_bytes": m.size_bytes}


def _trials_json(result: SearchResult) -> dict[str, Any]:
    return {"study": result.study, "storage": result.storage, "objectives": list(result.config.objectives),
            "baseline": result.baseline, "pareto": result.pareto,
            "trials": [{"number": r.number, "state": r.state, "params": r.params, "metrics": r.metrics,
                        "design": r.design.to_json() if r.design else None} for r in result.trials],
            "final": [{"trial": p.trial, "design": p.design.to_json(), "val": p.val.to_json(), "test": p.test.to_json(),
                       "val_loss_pp": p.val_loss_pp, "test_loss_pp": p.test_loss_pp} for p in result.final],
            "chosen": result.chosen.trial if result.chosen else None}


@register_stage("search", SearchConfig,
                "hardware-aware co-design search (Optuna): per-layer pruning, bits, multipliers and dataflow together")
def search_stage(ctx: StageContext, cfg: SearchConfig) -> StageResult:
    rep = Report("search")
    base = ctx.models.get("baseline")
    if base is None:
        base = ctx.model
        rep.notes.append("no baseline model published: searching from the current model")
    if ctx.device.type != "cpu":
        rep.notes.append(f"trials run on the CPU (workers are forked processes), not on {ctx.device}")
    folder = ctx.stage_dir("search")
    storage = cfg.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    result = search(copy.deepcopy(base).cpu(), cfg, ctx.data, seed=ctx.seed, storage=storage)
    sequential = sequential_point(ctx, cfg, rep.notes)
    fill_report(rep, result, sequential)
    if sequential is not None:
        rep.metrics["sequential"] = sequential
    atomic_write_json(folder / "trials.json", _trials_json(result))
    if result.model is None:
        return StageResult(report=rep)
    from crosslayer.approx import get_multiplier

    assignment = {n: {"name": m, "relative_power": get_multiplier(m).relative_power}
                  for n, m in result.assignment.items()}
    return StageResult(report=rep, model=result.model, publish={"search": result.model},
                       artifacts={MULTIPLIER_ASSIGNMENT: assignment})

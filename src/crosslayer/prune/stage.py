"""Flow stage ``prune``: the iterative magnitude (or structured) pruning schedule on the current model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from crosslayer.prune.api import sparsify
from crosslayer.prune.masks import Masks
from crosslayer.prune.schedule import PruneResult, ScheduleConfig
from crosslayer.prune.storage import model_storage
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage

__all__ = ["PruneConfig", "fill_report", "prune_stage"]

STATE_FILE = "schedule_state.pt"


@dataclass(frozen=True, kw_only=True)
class PruneConfig(ScheduleConfig):
    """The schedule's options plus ``resume`` (continue an interrupted run from the stage folder)."""

    resume: bool = True


def fill_report(rep: Report, outcome: PruneResult, base_model: nn.Module, cfg: ScheduleConfig) -> None:
    """Metrics, tables and the accuracy-vs-sparsity plot of a pruning run (shared by the stage and the CLI)."""
    from crosslayer.viz import new_figure, to_figure

    model, kept, base = outcome.model, outcome.kept, outcome.history[0]
    storage = model_storage(model)
    dense_bits = 32 * sum(p.numel() for p in base_model.parameters())
    rep.metrics.update({
        "test_accuracy": kept["test_accuracy"], "val_accuracy": kept["val_accuracy"],
        "baseline_test_accuracy": base["test_accuracy"], "baseline_val_accuracy": base["val_accuracy"],
        "accuracy_loss_pp": kept["test_loss_pp"], "val_accuracy_loss_pp": kept["val_loss_pp"],
        "sparsity": kept["sparsity"], "weight_bits_total": storage.bits, "index_bits_total": storage.index_bits_total,
        "compression_ratio": dense_bits / max(1, storage.bits), "params": kept["params"],
        "params_nonzero": storage.nonzeros, "macs": kept["macs"], "nonzero_macs": kept["nonzero_macs"],
        "baseline_macs": base["macs"], "steps_run": len(outcome.history) - 1, "kept_step": outcome.kept_step,
        "structured": cfg.structured, "scheme": "structured-" + cfg.importance if cfg.structured else cfg.scheme,
        "layer_sparsity": kept["layer_sparsity"],
    })
    rep.headline.update({"test_accuracy": kept["test_accuracy"], "model_bytes": storage.bits / 8})
    if kept.get("lambda") is not None:
        rep.metrics["lambda"] = kept["lambda"]
    rep.add_table("Pruning steps", ["step", "target", "sparsity", "params", "nonzero MACs", "val acc", "test acc",
                                    "val loss (pp)", "± SE (pp)", "within budget", "seconds"],
                  [[h["step"], h["target"], h["sparsity"], h["params"], h["nonzero_macs"], h["val_accuracy"],
                    h["test_accuracy"], h["val_loss_pp"], h["val_loss_se_pp"], h["within_budget"],
                    h["seconds"]]
                   for h in outcome.history])
    by_name = {x.name: x for x in storage.layers}
    rows: list[list[Any]] = []
    for name, s in kept["layer_sparsity"].items():
        st = by_name.get(name)
        rows.append([name, s, st.numel if st else 0, st.nonzeros if st else 0, st.bits if st else 0,
                     "relative-index" if st and st.sparse else "dense"])
    rep.add_table("Per-layer sparsity (kept model)", ["weight", "sparsity", "params", "non-zeros", "stored bits",
                                                      "format"], rows)
    fig, ax = new_figure()
    xs = [100 * h["sparsity"] for h in outcome.history]
    ax.plot(xs, [100 * h["val_accuracy"] for h in outcome.history], "o-", label="validation")
    ax.plot(xs, [100 * h["test_accuracy"] for h in outcome.history], "s--", label="test")
    ax.axhline(100 * base["val_accuracy"] - cfg.budget_pp, color="grey", lw=0.8, ls=":",
               label=f"budget ({cfg.budget_pp:g} pp below val.)")
    ax.axvline(100 * kept["sparsity"], color="green", lw=0.8, label="kept")
    ax.set_xlabel("removed parameters (%)" if cfg.structured else "pruned weights (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs. sparsity over the pruning steps")
    ax.grid(True, alpha=0.3)
    ax.legend()
    rep.figures.append(to_figure(fig, "Accuracy vs. sparsity",
                                 f"{rep.metrics['scheme']}; each point is one prune + fine-tune step"))
    rep.notes.append(f"stopped: {outcome.stop_reason}; kept step {outcome.kept_step} "
                     f"(sparsity {kept['sparsity']:.4f}, test loss {kept['test_loss_pp']:.2f} pp)")
    rep.notes.append("compression_ratio = dense fp32 bits of the unpruned model / stored bits (fp32 values + "
                     "Deep Compression relative indices: 8 bits conv, 5 bits fc, filler zeros included)")
    if outcome.resumed_from:
        rep.notes.append(f"resumed from the state file: steps 1-{outcome.resumed_from} were reused, not re-run")


@register_stage("prune", PruneConfig, "iterative magnitude / structured pruning with fine-tuning")
def prune_stage(ctx: StageContext, cfg: PruneConfig) -> StageResult:
    rep = Report("prune")
    state = ctx.stage_dir("prune") / STATE_FILE
    if not cfg.resume and state.exists():
        state.unlink()
    outcome = sparsify(ctx.model, cfg, ctx.data, seed=ctx.seed, state_path=state)  # works on a copy
    fill_report(rep, outcome, ctx.model, cfg)
    masks: Masks = {k: v.clone() for k, v in outcome.masks.items()}
    return StageResult(report=rep, model=outcome.model, publish={"pruned": outcome.model},
                       artifacts={"pruning_masks": masks})

"""Flow stage ``approximate``: spend the model's error tolerance on approximate 8-bit multipliers (a thin
caller of :func:`~crosslayer.approx.api.approximate`, which holds the method, and its report).

Input: the current model, quantized to 8 bits by the ``quantize`` stage (otherwise an int8 copy is made and
the report says so). Layers are visited in the order of the ``resilience_ranking`` artifact when a resilience
stage ran, else in the order of the per-layer sweep. Publishes model ``"approximate"`` and artifact
``"multiplier_assignment"``; the current model is unchanged.
"""

from __future__ import annotations

from crosslayer.approx.api import ApproximateConfig, ApproximateResult, approximate, ensure_int8, load_tables
from crosslayer.approx.metrics import uniform_metrics
from crosslayer.approx.plots import accuracy_vs_med, accuracy_vs_power
from crosslayer.approx.tables import Multiplier
from crosslayer.report import Report
from crosslayer.stage import MULTIPLIER_ASSIGNMENT, RESILIENCE_RANKING, StageContext, StageResult, register_stage

__all__ = ["ApproximateConfig", "approximate_report", "ensure_int8", "load_tables"]


@register_stage("approximate", ApproximateConfig, "approximate 8-bit multipliers per layer within an accuracy budget")
def approximate_stage(ctx: StageContext, cfg: ApproximateConfig) -> StageResult:
    res = approximate(ctx.model, cfg, ctx.data, seed=ctx.seed, ranking=ctx.get(RESILIENCE_RANKING))
    return StageResult(report=approximate_report(res, cfg), publish={"approximate": res.model},
                       artifacts={MULTIPLIER_ASSIGNMENT: res.assignment})


def approximate_report(res: ApproximateResult, cfg: ApproximateConfig) -> Report:
    """The ``approximate`` report of a result: the library and sweeps, curable designs, the chosen assignment,
    the greedy trace and the figures (the survey's Fig. 9 and accuracy versus power)."""
    rep = Report("approximate")
    if res.int8_note:
        rep.notes.append(res.int8_note)
    split, n_sel = res.selection_split, res.selection_images
    rep.add_table("Multiplier library (uniform operands) and accuracy with all layers approximated",
                  ["multiplier", "relative power", "MED", "MRED", "WCE", "error rate", "bias", f"{split} accuracy"],
                  [[m.name, m.relative_power, *(_fmt_metrics(m)), p.accuracy]
                   for m, p in zip(res.multipliers, res.uniform, strict=True)])
    rep.notes.extend(f"{m.name}: {m.description}; relative power: {m.source}" for m in res.multipliers)
    layers = [c.layer for c in res.layers]
    if res.per_layer:
        by_layer = {(p.layer, p.multiplier): p.accuracy for p in res.per_layer}
        rep.add_table("Accuracy with one layer approximated (others exact)", ["multiplier", *layers],
                      [[m.name, *(by_layer[(n, m.name)] for n in layers)] for m in res.multipliers])
    rep.figures.append(accuracy_vs_med([*res.uniform, *res.per_layer], res.reference_accuracy, caption=(
        f"{split} accuracy ({n_sel} images) against each multiplier's mean error distance; "
        "as the survey's Fig. 9 for LeNet on CIFAR-10, accuracy falls as MED grows, and layers differ.")))
    if res.cured:
        rep.add_table("Curable designs (CANN-style: the accumulator cures the multiplier's error; modelled cost)",
                      ["design", "relative latency", "relative area", "supply ratio", "relative power",
                       "MED uncured", f"{split} accuracy uncured", f"{split} accuracy cured",
                       "cured logits == exact int8"],
                      [[c.design, c.cost.relative_latency, c.cost.relative_area, c.cost.supply_ratio,
                        c.cost.relative_power, c.uncured_med, c.uncured_accuracy, c.cured_accuracy,
                        c.equals_exact] for c in res.cured])
        rep.metrics["cured"] = {c.design: {"relative_power": c.cost.relative_power, "relative_latency":
                                           c.cost.relative_latency, "uncured_accuracy": c.uncured_accuracy,
                                           "accuracy": c.cured_accuracy, "equals_exact": c.equals_exact}
                                for c in res.cured}
    rep.figures.append(accuracy_vs_power(res.uniform, res.reference_accuracy, res.cured, caption=(
        f"{split} accuracy with every layer on one multiplier against its relative power; curable "
        "designs cured (star) and without their cure (cross)")))
    rep.notes.append("layer order from the resilience stage's ranking (most resilient first)"
                     if res.ranking_source == "given" else
                     "no resilience_ranking artifact: layers ranked by this stage's own per-layer multiplier "
                     "sweep (mean accuracy drop, smallest first)")
    if res.finetune_note:
        rep.notes.append(res.finetune_note)
    sel = res.selection
    rep.add_table("Chosen assignment (layers most resilient first: " + ", ".join(res.ranking) + ")",
                  ["layer", "multiplier", "relative power", "MACs / image", "MED uniform", "MED layer operands",
                   "MRED layer operands", "bias layer operands"],
                  [[c.layer, c.multiplier.name, c.multiplier.relative_power, c.macs, c.uniform.med, c.operands.med,
                    c.operands.mred, c.operands.bias] for c in res.layers])
    rep.add_table("Greedy search trace (accepted when loss + margin <= budget)",
                  ["layer", "multiplier", f"{split} accuracy", "loss pp", "margin pp", "accepted"],
                  [[t["layer"], t["multiplier"], t["accuracy"], t["loss_pp"], t["margin_pp"], t["accepted"]]
                   for t in sel.trace])
    rep.metrics.update({
        "test_accuracy": res.test_accuracy, "exact_int8_test_accuracy": res.exact_int8_test_accuracy,
        "fake_quant_test_accuracy": res.fake_quant_test_accuracy, "accuracy_loss_pp": res.accuracy_loss_pp,
        "selection_accuracy_loss_pp": sel.loss_pp, "selection_margin_pp": sel.margin_pp,
        "selection_confidence": cfg.confidence, "budget_pp": cfg.budget_pp,
        "multiplier_power_saving": res.power_saving, "approximated_layers": len(sel.assignment),
        "greedy_evaluations": sel.evaluations, "emulation_images_per_s": res.emulation_images_per_s,
        "test_samples": res.test_images, "selection_samples": n_sel,
        "uniform_sweep": {p.multiplier: p.accuracy for p in res.uniform},
    })
    rep.metrics["multiplier_assignment"] = res.assignment
    return rep


def _fmt_metrics(m: Multiplier) -> list[float]:
    u = uniform_metrics(m)
    return [u.med, u.mred, u.wce, u.error_rate, u.bias]

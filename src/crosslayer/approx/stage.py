"""Flow stage ``approximate``: spend the model's error tolerance on approximate 8-bit multipliers.

Input: the current model, quantized to 8 bits by the ``quantize`` stage (otherwise an int8 copy is made
here and the report says so). Sweeps every multiplier over all layers and per layer (the survey's
Fig. 9), ranks layers by the ``resilience_ranking`` artifact (or by its own per-layer sweep when that is
absent), greedily assigns the cheapest multiplier per layer within the accuracy budget (selected on the
validation split, reported on the test split), optionally fine-tunes approximation-aware (AxNN).
Publishes model ``"approximate"`` and artifact ``"multiplier_assignment"``; the current model is unchanged.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from crosslayer.approx.catalog import DEFAULT_NAMES, library
from crosslayer.approx.cured import cured_design, evaluate_cured
from crosslayer.approx.emulate import approximable_layers, approximate_model, assignment_of
from crosslayer.approx.finetune import finetune
from crosslayer.approx.metrics import error_metrics, operand_histograms, uniform_metrics
from crosslayer.approx.plots import accuracy_vs_med, accuracy_vs_power
from crosslayer.approx.select import (
    as_accuracy,
    correct_on,
    greedy_select,
    layer_macs,
    per_layer_sweep,
    power_saving,
    sensitivity_ranking,
    uniform_sweep,
)
from crosslayer.approx.tables import Multiplier, load_table
from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec, QuantLayer, calibrating, iter_quant_layers, quantize_model
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import TrainConfig, evaluate, predict

__all__ = ["ApproximateConfig", "ensure_int8", "load_tables"]


@dataclass(frozen=True, kw_only=True)
class ApproximateConfig(Config):
    """Options of the ``approximate`` stage.

    ``multipliers``: library names (see ``crosslayer approx list``); ``truth_tables``: extra multipliers
    from 256x256 truth-table files (``path`` or ``path:relative_power``); ``power_overrides``: relative
    power per name. ``budget_pp``: allowed accuracy loss vs the exact int8 model, percentage points.
    ``select_limit`` / ``test_limit``: images of the validation / test split used (0 = all).
    ``confidence``: one-sided confidence of the selection's acceptance rule (observed loss plus the paired
    standard-error margin within the budget, see :mod:`crosslayer.approx.select`; 0.5 = no margin).
    ``cured``: curable designs (``cann<k>``, :mod:`crosslayer.approx.cured`) reported beside the multipliers.
    """

    multipliers: tuple[str, ...] = DEFAULT_NAMES
    truth_tables: tuple[str, ...] = ()
    power_overrides: dict[str, float] = field(default_factory=dict)
    budget_pp: float = 0.5
    confidence: float = 0.99
    select_on: Literal["val", "test"] = "val"
    select_limit: int = 1000
    test_limit: int = 0
    per_layer_sweep: bool = True
    finetune_epochs: int = 0
    finetune_lr: float = 0.001
    finetune_limit: int = 3000
    calibration_images: int = 1000
    cured: tuple[str, ...] = ("cann12",)

    def validate(self) -> None:
        check_range("budget_pp", self.budget_pp, 0.0, 100.0)
        check_range("confidence", self.confidence, 0.5, 1.0, hi_open=True)
        check_range("select_limit", self.select_limit, 0)
        check_range("test_limit", self.test_limit, 0)
        check_range("finetune_epochs", self.finetune_epochs, 0, 100)
        check_range("finetune_lr", self.finetune_lr, 0.0, 1.0, lo_open=True)
        check_range("finetune_limit", self.finetune_limit, 0)
        check_range("calibration_images", self.calibration_images, 1)
        if not self.multipliers and not self.truth_tables:
            raise ConfigError("approximate.multipliers is empty; name at least one multiplier or truth table")
        library(self.multipliers)  # unknown names raise here, with the allowed names
        for name in self.cured:
            cured_design(name)


def load_tables(specs: tuple[str, ...]) -> list[Multiplier]:
    """Truth-table multipliers from ``path`` or ``path:relative_power`` entries."""
    out = []
    for spec in specs:
        path, _, tail = spec.rpartition(":")
        try:
            power: float | None = float(tail) if path else None
        except ValueError:
            power = None
        out.append(load_table(path if power is not None else spec, relative_power=power))
    return out


def _is_int8_ready(model: nn.Module) -> bool:
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    qs = [m for _, m in iter_quant_layers(model)]
    return bool(qs) and len(qs) == len(convs) and all(
        m.weight_spec is not None and m.weight_spec.bits <= 8 and m.act_spec is not None
        and m.act_spec.bits <= 8 and m.act_calibrated for m in qs)


def ensure_int8(model: nn.Module, calib: torch.Tensor) -> tuple[nn.Module, str | None]:
    """``model`` if every Conv2d / Linear has <= 8-bit weight and calibrated activation codes, else an int8
    copy (per-tensor symmetric signed weights and activations, calibrated on ``calib``) and a note."""
    if _is_int8_ready(model):
        return model, None
    q = copy.deepcopy(model)
    w8, a8 = FixedPointSpec(bits=8), FixedPointSpec(bits=8)
    names = [n for n, m in q.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
             and (not isinstance(m, QuantLayer) or m.weight_spec is None or m.weight_spec.bits > 8
                  or m.act_spec is None or m.act_spec.bits > 8)]
    if names:
        quantize_model(q, w8, a8, layers=names)
    with calibrating(q):
        predict(q, calib)
    return q, ("the input model was not fully quantized to 8 bits; an int8 copy (symmetric per-tensor weights and "
               f"activations, {len(calib)} calibration images) was made for the approximate stage")


@register_stage("approximate", ApproximateConfig, "approximate 8-bit multipliers per layer within an accuracy budget")
def approximate_stage(ctx: StageContext, cfg: ApproximateConfig) -> StageResult:
    rep = Report("approximate")
    mults = library(cfg.multipliers, cfg.power_overrides) + load_tables(cfg.truth_tables)
    data = ctx.data
    q, note = ensure_int8(ctx.model, data.train.images[:cfg.calibration_images])
    if note:
        rep.notes.append(note)
    q.eval()
    sel_data = data.val if cfg.select_on == "val" else data.test
    sel_data = sel_data.subset(cfg.select_limit) if cfg.select_limit else sel_data
    test = data.test.subset(cfg.test_limit) if cfg.test_limit else data.test
    score = correct_on(sel_data)
    layers = approximable_layers(q)
    macs = layer_macs(q, data.test.images[:1].to(ctx.device))
    exact = approximate_model(q, {n: "exact" for n in layers})
    ref_out = score(exact)
    ref = as_accuracy(ref_out)

    uni = uniform_sweep(q, mults, score)
    per = per_layer_sweep(q, mults, score) if cfg.per_layer_sweep else []
    rep.add_table("Multiplier library (uniform operands) and accuracy with all layers approximated",
                  ["multiplier", "relative power", "MED", "MRED", "WCE", "error rate", "bias",
                   f"{sel_data.split} accuracy"],
                  [[m.name, m.relative_power, *(_fmt_metrics(m)), p.accuracy] for m, p in zip(mults, uni, strict=True)])
    rep.notes.extend(f"{m.name}: {m.description}; relative power: {m.source}" for m in mults)
    if per:
        by_layer = {(p.layer, p.multiplier): p.accuracy for p in per}
        rep.add_table("Accuracy with one layer approximated (others exact)", ["multiplier", *layers],
                      [[m.name, *(by_layer[(n, m.name)] for n in layers)] for m in mults])
    rep.figures.append(accuracy_vs_med([*uni, *per], ref, caption=(
        f"{sel_data.split} accuracy ({len(sel_data)} images) against each multiplier's mean error distance; "
        "as the survey's Fig. 9 for LeNet on CIFAR-10, accuracy falls as MED grows, and layers differ.")))
    cured = evaluate_cured(q, exact, cfg.cured, sel_data.images, sel_data.labels)
    if cured:
        rep.add_table("Curable designs (CANN-style: the accumulator cures the multiplier's error; modelled cost)",
                      ["design", "relative latency", "relative area", "supply ratio", "relative power",
                       "MED uncured", f"{sel_data.split} accuracy uncured", f"{sel_data.split} accuracy cured",
                       "cured logits == exact int8"],
                      [[c.design, c.cost.relative_latency, c.cost.relative_area, c.cost.supply_ratio,
                        c.cost.relative_power, c.uncured_med, c.uncured_accuracy, c.cured_accuracy,
                        c.equals_exact] for c in cured])
        rep.metrics["cured"] = {c.design: {"relative_power": c.cost.relative_power, "relative_latency":
                                           c.cost.relative_latency, "uncured_accuracy": c.uncured_accuracy,
                                           "accuracy": c.cured_accuracy, "equals_exact": c.equals_exact}
                                for c in cured}
    rep.figures.append(accuracy_vs_power(uni, ref, cured, caption=(
        f"{sel_data.split} accuracy with every layer on one multiplier against its relative power; curable "
        "designs cured (star) and without their cure (cross)")))

    ranking = [n for n in ctx.artifacts.get("resilience_ranking", []) if n in layers]
    if ranking:
        ranking += [n for n in layers if n not in ranking]
        rep.notes.append("layer order from the resilience stage's ranking (most resilient first)")
    else:
        pts = per or per_layer_sweep(q, [m for m in mults if m.relative_power < 1.0] or mults, score)
        ranking = sensitivity_ranking(pts, ref)
        rep.notes.append("no resilience_ranking artifact: layers ranked by this stage's own per-layer multiplier "
                         "sweep (mean accuracy drop, smallest first)")
    single = {(p.layer, p.multiplier): p.accuracy for p in per} or None
    sel = greedy_select(q, mults, ranking, score, budget_pp=cfg.budget_pp, macs=macs, reference=ref_out,
                        single_layer=single, confidence=cfg.confidence)
    model = approximate_model(q, {n: sel.assignment.get(n, "exact") for n in layers})

    if cfg.finetune_epochs and sel.assignment:
        train = data.train.subset(cfg.finetune_limit) if cfg.finetune_limit else data.train
        before = as_accuracy(score(model))
        finetune(model, train, data.val, TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, optimizer="adam",
                                                     weight_decay=0.0, batch_size=64), seed=ctx.seed)
        model.eval()
        rep.notes.append(f"AxNN fine-tuning, {cfg.finetune_epochs} epoch(s): {sel_data.split} accuracy "
                         f"{before:.4f} -> {as_accuracy(score(model)):.4f}")

    t0 = time.perf_counter()
    acc = evaluate(model, test).accuracy
    seconds = time.perf_counter() - t0
    ref_test = evaluate(exact, test).accuracy
    fq_test = evaluate(q, test).accuracy
    saving = power_saving(sel.assignment, macs)
    rows = []
    calib = data.val.images[:256]
    for n in layers:
        m = sel.assignment.get(n)
        layer = getattr(q.get_submodule(n), "layer", q.get_submodule(n))
        with _capture_input(q, n) as seen:
            predict(q, calib)
        wv, wc, av, ac = operand_histograms(layer, seen[0])
        mult = m or library(("exact",))[0]
        lm = error_metrics(mult, wv, av, wc, ac)
        rows.append([n, mult.name, mult.relative_power, macs[n], uniform_metrics(mult).med, lm.med, lm.mred, lm.bias])
    rep.add_table("Chosen assignment (layers most resilient first: " + ", ".join(ranking) + ")",
                  ["layer", "multiplier", "relative power", "MACs / image", "MED uniform", "MED layer operands",
                   "MRED layer operands", "bias layer operands"], rows)
    rep.add_table("Greedy search trace (accepted when loss + margin <= budget)",
                  ["layer", "multiplier", f"{sel_data.split} accuracy", "loss pp", "margin pp", "accepted"],
                  [[t["layer"], t["multiplier"], t["accuracy"], t["loss_pp"], t["margin_pp"], t["accepted"]]
                   for t in sel.trace])
    rep.metrics.update({
        "test_accuracy": acc, "exact_int8_test_accuracy": ref_test, "fake_quant_test_accuracy": fq_test,
        "accuracy_loss_pp": 100.0 * (ref_test - acc), "selection_accuracy_loss_pp": sel.loss_pp,
        "selection_margin_pp": sel.margin_pp, "selection_confidence": cfg.confidence,
        "budget_pp": cfg.budget_pp, "multiplier_power_saving": saving, "approximated_layers": len(sel.assignment),
        "greedy_evaluations": sel.evaluations, "emulation_images_per_s": len(test) / max(seconds, 1e-9),
        "test_samples": len(test), "selection_samples": len(sel_data),
        "uniform_sweep": {p.multiplier: p.accuracy for p in uni},
    })
    assignment = assignment_of(model)
    rep.metrics["multiplier_assignment"] = assignment
    return StageResult(report=rep, publish={"approximate": model},
                       artifacts={"multiplier_assignment": assignment})


def _fmt_metrics(m: Multiplier) -> list[float]:
    u = uniform_metrics(m)
    return [u.med, u.mred, u.wce, u.error_rate, u.bias]


class _capture_input:
    """Record the input tensor of layer ``name`` during the forward passes inside the block."""

    def __init__(self, model: nn.Module, name: str) -> None:
        self.module = model.get_submodule(name)
        self.seen: list[torch.Tensor] = []

    def __enter__(self) -> list[torch.Tensor]:
        self.handle = self.module.register_forward_hook(lambda _m, inp, _o: self.seen.append(inp[0].detach()))
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()
        if self.seen:
            self.seen[:] = [torch.cat(self.seen)]


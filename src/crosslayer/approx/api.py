"""The verbs of the approximate-multiplier step: :func:`approximate` spends a quantized model's error tolerance on
approximate 8-bit multipliers, one per layer, within an accuracy budget, and :func:`evaluate_assignment` measures
a given assignment.

:func:`approximate` sweeps every multiplier over all layers and per layer (the survey's Fig. 9), ranks the layers
(by a given resilience ranking, else by its own per-layer sweep), greedily assigns the cheapest multiplier per
layer within the budget (AxNN, Venkataramani et al., ISLPED 2014; Mrazek et al., ICCAD 2016; the acceptance rule
of :mod:`crosslayer.approx.select`), selected on the validation split and reported on the test split, optionally
fine-tunes approximation-aware, and reports curable designs (:mod:`crosslayer.approx.cured`) beside them.
A model that is not already int8 is quantized to int8 on a copy first; the model passed in is not modified.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from crosslayer.approx.catalog import DEFAULT_NAMES, library
from crosslayer.approx.cured import CuredPoint, cured_design, evaluate_cured
from crosslayer.approx.emulate import approximable_layers, approximate_model, assignment_of
from crosslayer.approx.finetune import finetune
from crosslayer.approx.metrics import ErrorMetrics, error_metrics, operand_histograms, uniform_metrics
from crosslayer.approx.select import (
    Selection,
    SweepPoint,
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
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec, QuantLayer, calibrating, iter_quant_layers, quantize_model
from crosslayer.train import TrainConfig, evaluate, predict

__all__ = ["ApproximateConfig", "ApproximateResult", "AssignmentResult", "LayerChoice", "approximate",
           "ensure_int8", "evaluate_assignment", "load_tables"]


@dataclass(frozen=True, kw_only=True)
class ApproximateConfig(Config):
    """Options of :func:`approximate` (and of the ``approximate`` stage).

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


def load_tables(specs: Sequence[str]) -> list[Multiplier]:
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


@dataclass(frozen=True)
class LayerChoice:
    """One layer's multiplier, its relative power, the layer's MACs per image and the multiplier's error on
    uniform operands (``uniform``) and on the operands the layer really sees (``operands``)."""

    layer: str
    multiplier: Multiplier
    macs: int
    uniform: ErrorMetrics
    operands: ErrorMetrics


@dataclass
class ApproximateResult:
    """The approximated ``model`` (the int8 model ``int8`` with the chosen multiplier per layer, ``assignment``
    ``{layer: {name, relative_power}}``), its test accuracy beside the exact int8 and fake-quantized models',
    the modelled multiplier ``power_saving`` (MAC-weighted), the greedy ``selection`` on ``selection_split``,
    the layer ``ranking`` it followed (``ranking_source``: ``"given"`` or ``"sweep"``), the sweeps, curable
    designs and per-layer choices; ``int8_note`` says when an int8 copy was made, ``finetune_note`` what the
fine-tuning changed."""

    model: nn.Module
    int8: nn.Module
    assignment: dict[str, dict[str, Any]]
    test_accuracy: float
    exact_int8_test_accuracy: float
    fake_quant_test_accuracy: float
    power_saving: float
    selection: Selection
    selection_split: str
    selection_images: int
    test_images: int
    ranking: list[str]
    ranking_source: str
    multipliers: list[Multiplier]
    uniform: list[SweepPoint]
    per_layer: list[SweepPoint]
    cured: list[CuredPoint]
    layers: list[LayerChoice]
    reference_accuracy: float
    emulation_images_per_s: float
    int8_note: str | None = None
    finetune_note: str | None = None

    @property
    def accuracy_loss_pp(self) -> float:
        return 100.0 * (self.exact_int8_test_accuracy - self.test_accuracy)


def approximate(model: nn.Module, config: ApproximateConfig, data: DataSplits, *, seed: int = 0,
                ranking: Sequence[str] | None = None) -> ApproximateResult:
    """Choose an approximate multiplier per layer of ``model`` within ``config.budget_pp`` (see the module
    docstring). ``ranking``: layer names, most resilient first (e.g. the resilience step's ranking); layers it
    omits follow it; without it the layers are ranked by the per-layer sweep. ``seed`` seeds the fine-tuning."""
    cfg = config
    mults = library(cfg.multipliers, cfg.power_overrides) + load_tables(cfg.truth_tables)
    q, int8_note = ensure_int8(model, data.train.images[:cfg.calibration_images])
    if q is model:
        q = copy.deepcopy(model)
    q.eval()
    sel_data = data.val if cfg.select_on == "val" else data.test
    sel_data = sel_data.subset(cfg.select_limit) if cfg.select_limit else sel_data
    test = data.test.subset(cfg.test_limit) if cfg.test_limit else data.test
    score = correct_on(sel_data)
    layers = approximable_layers(q)
    device = next((p.device for p in q.parameters()), torch.device("cpu"))
    macs = layer_macs(q, data.test.images[:1].to(device))
    exact = approximate_model(q, {n: "exact" for n in layers})
    ref_out = score(exact)
    ref = as_accuracy(ref_out)
    uni = uniform_sweep(q, mults, score)
    per = per_layer_sweep(q, mults, score) if cfg.per_layer_sweep else []
    cured = evaluate_cured(q, exact, cfg.cured, sel_data.images, sel_data.labels)
    order = [n for n in (ranking or ()) if n in layers]
    if order:
        order += [n for n in layers if n not in order]
        source = "given"
    else:
        pts = per or per_layer_sweep(q, [m for m in mults if m.relative_power < 1.0] or mults, score)
        order, source = sensitivity_ranking(pts, ref), "sweep"
    single = {(p.layer, p.multiplier): p.accuracy for p in per} or None
    sel = greedy_select(q, mults, order, score, budget_pp=cfg.budget_pp, macs=macs, reference=ref_out,
                        single_layer=single, confidence=cfg.confidence)
    approx = approximate_model(q, {n: sel.assignment.get(n, "exact") for n in layers})
    finetune_note = None
    if cfg.finetune_epochs and sel.assignment:
        train = data.train.subset(cfg.finetune_limit) if cfg.finetune_limit else data.train
        before = as_accuracy(score(approx))
        finetune(approx, train, data.val, TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                                                      optimizer="adam", weight_decay=0.0, batch_size=64), seed=seed)
        approx.eval()
        finetune_note = (f"AxNN fine-tuning, {cfg.finetune_epochs} epoch(s): {sel_data.split} accuracy "
                         f"{before:.4f} -> {as_accuracy(score(approx)):.4f}")
    t0 = time.perf_counter()
    acc = evaluate(approx, test).accuracy
    seconds = time.perf_counter() - t0
    choices = _layer_choices(q, layers, sel.assignment, macs, data.val.images[:256])
    return ApproximateResult(
        model=approx, int8=q, assignment=assignment_of(approx), test_accuracy=acc,
        exact_int8_test_accuracy=evaluate(exact, test).accuracy, fake_quant_test_accuracy=evaluate(q, test).accuracy,
        power_saving=power_saving(sel.assignment, macs), selection=sel, selection_split=sel_data.split,
        selection_images=len(sel_data), test_images=len(test), ranking=order, ranking_source=source,
        multipliers=mults, uniform=uni, per_layer=per, cured=cured, layers=choices, reference_accuracy=ref,
        emulation_images_per_s=len(test) / max(seconds, 1e-9), int8_note=int8_note, finetune_note=finetune_note)


def _layer_choices(q: nn.Module, layers: list[str], assignment: Mapping[str, Multiplier], macs: Mapping[str, int],
                   calib: torch.Tensor) -> list[LayerChoice]:
    out = []
    exact = library(("exact",))[0]
    for n in layers:
        layer = getattr(q.get_submodule(n), "layer", q.get_submodule(n))
        with _capture_input(q, n) as seen:
            predict(q, calib)
        wv, wc, av, ac = operand_histograms(layer, seen[0])
        mult = assignment.get(n) or exact
        out.append(LayerChoice(n, mult, macs[n], uniform_metrics(mult), error_metrics(mult, wv, av, wc, ac)))
    return out


@dataclass(frozen=True)
class AssignmentResult:
    """Test accuracy of the int8 model with ``assignment`` and without approximation (``exact_accuracy``)."""

    model: nn.Module
    assignment: dict[str, dict[str, Any]]
    accuracy: float
    exact_accuracy: float
    images: int
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy_loss_pp(self) -> float:
        return 100.0 * (self.exact_accuracy - self.accuracy)


def evaluate_assignment(model: nn.Module, assignment: Mapping[str, Multiplier | str], data: DataSplits, *,
                        default: Multiplier | str = "exact", calibration_images: int = 1000,
                        test_limit: int = 0) -> AssignmentResult:
    """Test accuracy of ``model`` (made int8 on a copy, calibrated on the first ``calibration_images`` training
    images, when it is not int8 already) with ``assignment`` ``{layer: multiplier or name}``, the other layers on
    ``default``, beside the exact int8 model's, on the first ``test_limit`` test images (0 = all)."""
    check_range("calibration_images", calibration_images, 1)
    check_range("test_limit", test_limit, 0)
    test = data.test.subset(test_limit) if test_limit else data.test
    q, note = ensure_int8(model, data.train.images[:calibration_images])
    layers = approximable_layers(q)
    approx = approximate_model(q, {**{n: default for n in layers}, **assignment})
    exact = approximate_model(q, {n: "exact" for n in layers})
    return AssignmentResult(approx, assignment_of(approx), evaluate(approx, test).accuracy,
                            evaluate(exact, test).accuracy, len(test), [note] if note else [])


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

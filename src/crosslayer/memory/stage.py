"""Flow stage ``memory``: voltage-scaled weight memory (MATIC, Kim et al., DATE 2018).

The model's weights sit in an SRAM whose supply is lowered along a BER-vs-voltage curve
(:mod:`crosslayer.memory.curves`); ``chips`` sampled chips (:mod:`crosslayer.memory.chip`) read them back
with their own persistent failing bits. The stage measures accuracy against the voltage for the
conventional model and, below the lowest voltage the conventional model tolerates, for models fine-tuned
per chip with memory-adaptive training (:mod:`crosslayer.memory.adapt`); chooses each one's lowest
voltage within ``budget_pp`` on the validation split (:mod:`crosslayer.memory.search`), reports test
accuracy there, and prices the voltage in the accelerator model (:mod:`crosslayer.hw.voltage`: the
weight buffer's per-access energy). Publishes artifacts ``memory_voltage`` (the lowest voltage within the
budget, adapted if adaptation won) and ``weight_memory_energy_ratio`` (energy per access there against
nominal), and model ``memory_adapted`` (chip 0's adapted model, when adaptation won).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.hw.voltage import SramVoltageModel
from crosslayer.memory.adapt import AdaptConfig, ChipAccuracy, chip_accuracy, chip_correct
from crosslayer.memory.chip import sample_chip
from crosslayer.memory.curves import BerCurve, check_voltage, resolve_curve
from crosslayer.memory.energy import accelerator_energy
from crosslayer.memory.plots import accuracy_vs_voltage, energy_vs_voltage
from crosslayer.memory.search import adapted_search, lowest_within_budget, voltage_sweep
from crosslayer.memory.weights import memory_layout, weight_targets
from crosslayer.quant import FixedPointSpec, QuantLayer
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage

__all__ = ["MemoryConfig"]


@dataclass(frozen=True, kw_only=True)
class MemoryConfig(Config):
    """Options of the ``memory`` stage.

    ``curve``: a built-in BER curve (``kc705b-28nm``, ``kc705b-28nm-probit``) or the path of a
    ``voltage, ber`` CSV table; ``nominal_voltage``: 0 = the curve's own; ``voltages``: the sweep (empty =
    the curve's default grid); ``fault_mode``: how failing cells read (``curve`` = the curve's own);
    ``p_stuck_one``: share of ``stuck`` cells reading 1; ``bank_words`` / ``bank_sigma``: banks of that many
    words with log-normal vulnerability (0 = uniform); ``weight_bits``: word width for layers the model has
    not quantized. ``chips`` sampled chips; ``budget_pp`` against the fault-free accuracy, decided on
    ``select_limit`` validation images, measured on ``test_limit`` test images (0 = all).
    Memory-adaptive training: ``adapt``, ``adapt_epochs`` at ``adapt_lr`` (Adam) on ``adapt_limit`` training
    images (0 = all), at no more than ``adapt_max_voltages`` voltages below the conventional answer (0 = no
    limit). Energy: ``leakage_share`` of the access energy at nominal, the ``accelerator`` preset or file and
    its voltage-scaled ``buffer`` (``glb`` or ``rf``).
    """

    curve: str = "kc705b-28nm-probit"
    nominal_voltage: float = 0.0
    voltages: tuple[float, ...] = ()
    fault_mode: Literal["curve", "stuck", "stuck0", "stuck1", "flip"] = "curve"
    p_stuck_one: float = 0.5
    bank_words: int = 0
    bank_sigma: float = 0.0
    weight_bits: int = 8
    chips: int = 3
    budget_pp: float = 1.0
    select_limit: int = 1000
    test_limit: int = 0
    adapt: bool = True
    adapt_epochs: int = 1
    adapt_lr: float = 0.0001
    adapt_limit: int = 3000
    adapt_max_voltages: int = 3
    leakage_share: float = 0.0
    accelerator: str = "eyeriss"
    buffer: Literal["glb", "rf"] = "glb"

    def validate(self) -> None:
        for name in ("nominal_voltage", "p_stuck_one", "bank_sigma", "budget_pp", "adapt_lr", "leakage_share"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ConfigError(f"[memory] {name} = {v!r} is not a finite number")
        if self.nominal_voltage != 0.0:
            check_voltage(self.nominal_voltage, "[memory] nominal_voltage")
        for v in self.voltages:
            check_voltage(v, "[memory] voltages[]")
        if len(set(self.voltages)) != len(self.voltages):
            raise ConfigError("[memory] voltages lists a voltage twice")
        check_range("[memory] p_stuck_one", self.p_stuck_one, 0.0, 1.0)
        check_range("[memory] bank_words", self.bank_words, 0)
        check_range("[memory] bank_sigma", self.bank_sigma, 0.0, 4.0)
        check_range("[memory] weight_bits", self.weight_bits, 2, 16)
        check_range("[memory] chips", self.chips, 1, 1000)
        check_range("[memory] budget_pp", self.budget_pp, 0.0, 100.0)
        check_range("[memory] select_limit", self.select_limit, 0)
        check_range("[memory] test_limit", self.test_limit, 0)
        check_range("[memory] adapt_epochs", self.adapt_epochs, 1, 100)
        check_range("[memory] adapt_lr", self.adapt_lr, 0.0, 1.0, lo_open=True)
        check_range("[memory] adapt_limit", self.adapt_limit, 0)
        check_range("[memory] adapt_max_voltages", self.adapt_max_voltages, 0)
        check_range("[memory] leakage_share", self.leakage_share, 0.0, 1.0)
        curve = self.resolve()
        for v in self.grid(curve):
            curve.ber(v)  # a voltage outside the curve's range raises here, naming the range

    def resolve(self) -> BerCurve:
        mode = None if self.fault_mode == "curve" else self.fault_mode
        return resolve_curve(self.curve, nominal_v=self.nominal_voltage or None, fault_mode=mode)

    def grid(self, curve: BerCurve) -> tuple[float, ...]:
        return tuple(sorted(self.voltages, reverse=True)) if self.voltages else curve.default_grid()


def _row(p: ChipAccuracy | None) -> list[Any]:
    return ["", ""] if p is None else [p.mean, p.std]


@register_stage("memory", MemoryConfig, "voltage-scaled weight SRAM: accuracy vs voltage, memory-adaptive training")
def memory_stage(ctx: StageContext, cfg: MemoryConfig) -> StageResult:
    rep = Report("memory")
    model = ctx.model.eval()
    curve = cfg.resolve()
    grid = cfg.grid(curve)
    code_spec = FixedPointSpec(bits=cfg.weight_bits, per_channel=True)
    targets = weight_targets(model, code_spec)
    if not any(isinstance(t.module, QuantLayer) and t.module.weight_spec is not None for t in targets):
        rep.notes.append(f"the model is not quantized: its weights are stored as {cfg.weight_bits}-bit symmetric "
                         "per-channel codes for this stage")
    tensors, width = memory_layout(targets)
    chips = [sample_chip(tensors, width, curve, v_low=min(grid), seed=ctx.seed * 1000 + i, p_one=cfg.p_stuck_one,
                         bank_words=cfg.bank_words, bank_sigma=cfg.bank_sigma) for i in range(cfg.chips)]
    sel = ctx.data.val.subset(cfg.select_limit) if cfg.select_limit else ctx.data.val
    test = ctx.data.test.subset(cfg.test_limit) if cfg.test_limit else ctx.data.test
    ref_sel = float(chip_correct(model, sel, None, code_spec=code_spec).double().mean())
    ref_test = float(chip_correct(model, test, None, code_spec=code_spec).double().mean())

    conv_sel = voltage_sweep(model, chips, grid, sel, code_spec)
    conv_test = voltage_sweep(model, chips, grid, test, code_spec)
    v_conv = lowest_within_budget(conv_sel, ref_sel, cfg.budget_pp)
    ad_sel: dict[float, ChipAccuracy] = {}
    ad_test: dict[float, ChipAccuracy] = {}
    v_adapt: float | None = None
    published: dict[str, Any] = {}
    if cfg.adapt:
        below = [v for v in grid if v_conv is None or v < v_conv]
        below = below[:cfg.adapt_max_voltages] if cfg.adapt_max_voltages else below
        train = ctx.data.train.subset(cfg.adapt_limit) if cfg.adapt_limit else ctx.data.train
        acfg = AdaptConfig(epochs=cfg.adapt_epochs, lr=cfg.adapt_lr)
        points, v_adapt = adapted_search(model, chips, below, train, sel, ref_sel, cfg.budget_pp, acfg,
                                         seeds=[ctx.seed], code_spec=code_spec) if below else ([], None)
        for pt in points:
            ad_sel[pt.voltage] = pt.selection
            ad_test[pt.voltage] = chip_accuracy(pt.models, test, chips, pt.voltage, code_spec)
            if pt.voltage == v_adapt:
                published["memory_adapted"] = pt.models[0]
        if not below:
            rep.notes.append("the conventional model is within the budget at every voltage of the sweep: "
                             "no lower voltage left for memory-adaptive training")

    vm = SramVoltageModel(nominal_v=curve.nominal_v, leakage_share=cfg.leakage_share)
    energy = accelerator_energy(model, test.images[:64], cfg.accelerator, grid, vm, level=cfg.buffer)
    conv_by_v = {p.voltage: p for p in conv_test}
    rows = []
    for (v, sp), tp in zip(((p.voltage, p) for p in conv_sel), conv_test, strict=True):
        rows.append([v, curve.ber(v), chips[0].fault_count(v), sp.mean, tp.mean, tp.std, *_row(ad_test.get(v)),
                     energy[v]["buffer_ratio"], energy[v]["total_ratio"]])
    rep.add_table(f"Accuracy vs weight-memory voltage ({len(chips)} chips; test mean and std)",
                  ["voltage V", "BER", "faulty bits (chip 0)", f"{sel.split} conventional", "test conventional",
                   "std", "test adapted", "std", f"{cfg.buffer} energy / nominal", "accelerator energy / nominal"],
                  rows)
    chosen = v_adapt if v_adapt is not None else v_conv
    metrics: dict[str, Any] = {
        "curve": curve.name, "node": curve.node, "fault_mode": chips[0].mode, "chips": len(chips),
        "memory_bits": chips[0].bits, "budget_pp": cfg.budget_pp, "fault_free_test_accuracy": ref_test,
        "fault_free_selection_accuracy": ref_sel, "conventional_voltage": v_conv, "adapted_voltage": v_adapt,
        "test_samples": len(test), "selection_samples": len(sel),
    }
    for name, at, pts in (("conventional", v_conv, conv_by_v), ("adapted", v_adapt, ad_test)):
        if at is None:
            continue
        metrics[f"{name}_test_accuracy"] = pts[at].mean
        metrics[f"{name}_test_accuracy_std"] = pts[at].std
        metrics[f"{name}_read_energy_saving"] = 1.0 - vm.read_energy_ratio(at)
        metrics[f"{name}_access_energy_saving"] = 1.0 - vm.access_energy_ratio(at)
        metrics[f"{name}_accelerator_energy_saving"] = 1.0 - energy[at]["total_ratio"]
    if chosen is not None:
        metrics["test_accuracy"] = (ad_test if v_adapt is not None else conv_by_v)[chosen].mean
    rep.metrics.update(metrics)
    rep.notes.append(f"BER curve {curve.name}: {curve.node}; source: {curve.source}")
    rep.notes.append(f"lowest voltage rule: walking down from {max(grid):g} V, the last voltage whose mean "
                     f"{sel.split} accuracy over the chips is within {cfg.budget_pp:g} pp of the fault-free "
                     f"{ref_sel:.4f}; test accuracy measured there")
    if cfg.adapt and v_conv is not None and v_adapt is None and ad_sel:
        rep.notes.append("memory-adaptive training did not pass the budget at any lower voltage it tried")
    series = {"conventional": conv_test, "memory-adapted (MAT, per chip)": list(ad_test.values())}
    rep.figures.append(accuracy_vs_voltage(series, ref_test, cfg.budget_pp, curve, caption=(
        f"test accuracy over {len(chips)} chips ({len(test)} images); adapted models fine-tuned "
        f"{cfg.adapt_epochs} epoch(s) per chip at each voltage below the conventional model's lowest voltage")))
    rep.figures.append(energy_vs_voltage(vm, grid, {"conventional": v_conv, "adapted": v_adapt}, caption=(
        f"per-access energy of the weight memory relative to {vm.nominal_v:g} V; accelerator {cfg.accelerator}, "
        f"{cfg.buffer} buffer scaled")))
    artifacts: dict[str, Any] = {}
    if chosen is not None:
        artifacts = {"memory_voltage": chosen, "weight_memory_energy_ratio": vm.access_energy_ratio(chosen)}
    return StageResult(report=rep, publish=published, artifacts=artifacts)

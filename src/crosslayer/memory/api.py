"""The verb of the approximate-memory step: :func:`scale_memory_voltage` lowers the supply of the SRAM holding
a model's weights (MATIC, Kim et al., DATE 2018) along a BER-vs-voltage curve (:mod:`crosslayer.memory.curves`),
reads the weights back through sampled chips with their own persistent failing bits
(:mod:`crosslayer.memory.chip`), and measures accuracy against the voltage for the model as it is and, below the
lowest voltage it tolerates, for models fine-tuned per chip with memory-adaptive training
(:mod:`crosslayer.memory.adapt`). Each one's lowest voltage within the budget is chosen on the validation split
(:mod:`crosslayer.memory.search`) and measured on the test split; the voltage is priced in the accelerator model
(:mod:`crosslayer.hw.voltage`: the weight buffer's per-access energy). The model passed in is not modified.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.hw.voltage import SramVoltageModel
from crosslayer.memory.adapt import AdaptConfig, ChipAccuracy, chip_accuracy, chip_correct, memory_adaptive_train
from crosslayer.memory.chip import ChipMap, sample_chip
from crosslayer.memory.curves import BerCurve, check_voltage, resolve_curve
from crosslayer.memory.energy import accelerator_energy
from crosslayer.memory.search import adapted_search, lowest_within_budget, voltage_sweep
from crosslayer.memory.weights import memory_layout, weight_targets
from crosslayer.quant import FixedPointSpec, QuantLayer

__all__ = ["ChipAdaptation", "MemoryConfig", "MemoryResult", "adapt_to_chip", "scale_memory_voltage"]


@dataclass(frozen=True, kw_only=True)
class MemoryConfig(Config):
    """Options of :func:`scale_memory_voltage` (and of the ``memory`` stage).

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


@dataclass
class MemoryResult:
    """What the sweep measured: the ``curve`` and ``chips``, the voltage ``grid`` (highest first), the fault-free
    accuracy on the selection and test images, the conventional model's accuracy per voltage over the chips
    (``conventional_selection`` / ``conventional_test``, in grid order) and its lowest voltage within the budget
    (``conventional_voltage``), the adapted models' accuracies at the voltages tried (``adapted_selection`` /
    ``adapted_test``) and their lowest voltage (``adapted_voltage``; ``adapted_model``: chip 0's model there),
    the accelerator energy per voltage (``energy``: buffer and total ratios to nominal) and its voltage model.
    ``adapt_voltages``: the voltages adaptation was tried at (empty: none was left below the conventional one);
    ``quantized``: whether the model's own weight codes were stored (else ``weight_bits``-bit codes)."""

    curve: BerCurve
    chips: list[ChipMap]
    grid: tuple[float, ...]
    selection_split: str
    selection_images: int
    test_images: int
    fault_free_selection_accuracy: float
    fault_free_test_accuracy: float
    conventional_selection: list[ChipAccuracy]
    conventional_test: list[ChipAccuracy]
    conventional_voltage: float | None
    adapted_selection: dict[float, ChipAccuracy]
    adapted_test: dict[float, ChipAccuracy]
    adapted_voltage: float | None
    adapted_model: nn.Module | None
    adapt_voltages: list[float]
    energy: dict[float, dict[str, float]]
    voltage_model: SramVoltageModel
    quantized: bool

    @property
    def voltage(self) -> float | None:
        """The lowest voltage within the budget: the adapted models' when adaptation won, else the model's own."""
        return self.adapted_voltage if self.adapted_voltage is not None else self.conventional_voltage

    @property
    def test_accuracy(self) -> float | None:
        """Mean test accuracy over the chips at :attr:`voltage`."""
        v = self.voltage
        if v is None:
            return None
        if self.adapted_voltage is not None:
            return self.adapted_test[v].mean
        return {p.voltage: p for p in self.conventional_test}[v].mean


def scale_memory_voltage(model: nn.Module, config: MemoryConfig, data: DataSplits, *, seed: int = 0) -> MemoryResult:
    """Sweep the weight memory's voltage for ``model`` on ``config.chips`` chips (chip ``i`` seeded
    ``seed * 1000 + i``) and find the lowest voltage within ``config.budget_pp`` (see the module docstring)."""
    cfg = config
    model = copy.deepcopy(model).eval()
    curve = cfg.resolve()
    grid = cfg.grid(curve)
    code_spec = FixedPointSpec(bits=cfg.weight_bits, per_channel=True)
    targets = weight_targets(model, code_spec)
    quantized = any(isinstance(t.module, QuantLayer) and t.module.weight_spec is not None for t in targets)
    tensors, width = memory_layout(targets)
    chips = [sample_chip(tensors, width, curve, v_low=min(grid), seed=seed * 1000 + i, p_one=cfg.p_stuck_one,
                         bank_words=cfg.bank_words, bank_sigma=cfg.bank_sigma) for i in range(cfg.chips)]
    sel = data.val.subset(cfg.select_limit) if cfg.select_limit else data.val
    test = data.test.subset(cfg.test_limit) if cfg.test_limit else data.test
    ref_sel = float(chip_correct(model, sel, None, code_spec=code_spec).double().mean())
    ref_test = float(chip_correct(model, test, None, code_spec=code_spec).double().mean())
    conv_sel = voltage_sweep(model, chips, grid, sel, code_spec)
    conv_test = voltage_sweep(model, chips, grid, test, code_spec)
    v_conv = lowest_within_budget(conv_sel, ref_sel, cfg.budget_pp)
    ad_sel: dict[float, ChipAccuracy] = {}
    ad_test: dict[float, ChipAccuracy] = {}
    v_adapt: float | None = None
    adapted: nn.Module | None = None
    below: list[float] = []
    if cfg.adapt:
        below = [v for v in grid if v_conv is None or v < v_conv]
        below = below[:cfg.adapt_max_voltages] if cfg.adapt_max_voltages else below
        train = data.train.subset(cfg.adapt_limit) if cfg.adapt_limit else data.train
        acfg = AdaptConfig(epochs=cfg.adapt_epochs, lr=cfg.adapt_lr)
        points, v_adapt = adapted_search(model, chips, below, train, sel, ref_sel, cfg.budget_pp, acfg,
                                         seeds=[seed], code_spec=code_spec) if below else ([], None)
        for pt in points:
            ad_sel[pt.voltage] = pt.selection
            ad_test[pt.voltage] = chip_accuracy(pt.models, test, chips, pt.voltage, code_spec)
            if pt.voltage == v_adapt:
                adapted = pt.models[0]
    vm = SramVoltageModel(nominal_v=curve.nominal_v, leakage_share=cfg.leakage_share)
    energy = accelerator_energy(model, test.images[:64], cfg.accelerator, grid, vm, level=cfg.buffer)
    return MemoryResult(curve, chips, grid, sel.split, len(sel), len(test), ref_sel, ref_test, conv_sel, conv_test,
                        v_conv, ad_sel, ad_test, v_adapt, adapted, below, energy, vm, quantized)


@dataclass
class ChipAdaptation:
    """One chip's memory-adaptive training at one voltage: the chip, its bit-error rate and faulty bits there,
    test accuracy with the chip's faults before and after, and the adapted ``model`` (the input is not modified)."""

    chip: ChipMap
    voltage: float
    ber: float
    faulty_bits: int
    test_accuracy_before: float
    test_accuracy_after: float
    best_epoch: int
    train_seconds: float
    model: nn.Module


def adapt_to_chip(model: nn.Module, curve: BerCurve, voltage: float, data: DataSplits, config: AdaptConfig, *,
                  chip: int = 0, seed: int = 0) -> ChipAdaptation:
    """Memory-adaptive training (MATIC, Kim et al., DATE 2018) of ``model`` for chip number ``chip`` (its fault
    map sampled from ``curve`` with that seed) at ``voltage``: the weights are trained through the chip's
    persistent failing bits, the best validation epoch kept; accuracy measured on the test split."""
    check_range("chip", chip, 0)
    v = check_voltage(voltage, "voltage")
    net = copy.deepcopy(model).eval()
    tensors, width = memory_layout(weight_targets(net))
    chip_map = sample_chip(tensors, width, curve, v_low=v, seed=chip)
    before = chip_accuracy(net, data.test, [chip_map], v).mean
    adapted, res = memory_adaptive_train(net, chip_map, v, data.train, data.val, config, seed=seed)
    after = chip_accuracy(adapted, data.test, [chip_map], v).mean
    return ChipAdaptation(chip_map, v, curve.ber(v), chip_map.fault_count(v), before, after, res.best_epoch,
                          res.train_seconds, adapted)

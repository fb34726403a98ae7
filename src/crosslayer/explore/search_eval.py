"""One design, built and measured with the library's public steps (nothing re-implemented here):

1. remove the design's share of each channel group's output channels by structured pruning
   (:func:`crosslayer.prune.prune_structured`, L1 importance, traced on one training image), then
   prune each remaining layer to its ratio by weight magnitude (:func:`crosslayer.prune.magnitude_masks` on that layer,
   :func:`crosslayer.prune.apply_masks`);
2. quantize with per-layer weight / activation widths (:func:`crosslayer.quant.quantize`,
   ``layer_weight_bits`` / ``layer_act_bits``), fine-tuning quantization-aware for a few epochs with the masks
   kept (none: post-training calibration only);
3. put each layer's approximate multiplier in (:func:`crosslayer.approx.approximate_model`; layers it cannot
   take stay exact), or, for in-memory execution, map the layers onto crossbars
   (:func:`crosslayer.imc.to_crossbar`);
4. measure accuracy (:func:`crosslayer.train.evaluate`), energy and latency on the accelerator
   (:func:`crosslayer.hw.workload.extract_workload` + :func:`crosslayer.hw.cost_workload`, the fast whole-workload
   path, with the multipliers' relative power; or :func:`crosslayer.imc.cost.network_cost` for crossbars) and
   the stored size (:func:`crosslayer.quant.storage.quantized_storage`: codes, relative indices, scales).

With the weight-memory voltage knob (a design's ``memory_voltage``, :class:`MemoryTarget`), step 2 is followed by
memory-adaptive fine-tuning with one chip's failing bits at that voltage in the forward pass (MATIC: Kim et al.,
"MATIC: Learning Around Errors for Efficient Low-Voltage Neural Network Accelerators", DATE 2018), step 4
measures accuracy with the weights read through the same chip (:func:`crosslayer.memory.chip_weights`) and
energy with the weight buffer's per-access energy scaled to the voltage
(:func:`crosslayer.hw.voltage.at_memory_voltage`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from crosslayer.approx import approximate_model, get_multiplier
from crosslayer.data import DataSplits, ImageDataset
from crosslayer.errors import StageError
from crosslayer.explore.search_space import MIN_DATAFLOWS, MULTIPLIER_BITS, Design, approximable_reason
from crosslayer.hw import Accelerator, SparsityConfig, cost_workload
from crosslayer.hw.voltage import SramVoltageModel, at_memory_voltage
from crosslayer.hw.workload import extract_workload
from crosslayer.imc import CrossbarSpec, to_crossbar
from crosslayer.imc.cost import layer_shapes, network_cost
from crosslayer.memory import AdaptConfig, BerCurve, ChipMap, chip_weights, memory_layout, sample_chip, weight_targets
from crosslayer.prune import apply_masks, magnitude_masks, mask_sparsity, prunable_weights, prune_structured
from crosslayer.quant.pipeline import QuantizeConfig, quantize
from crosslayer.quant.storage import quantized_storage
from crosslayer.train import evaluate, fit, keep_pruned_zeros, predict

__all__ = ["BuiltDesign", "FineTune", "HardwareTarget", "Measured", "MemoryTarget", "build_design", "design_chip",
           "evaluate_design", "hardware_cost", "measure", "measure_model", "read_through_chip"]


@dataclass(frozen=True)
class FineTune:
    """Quantization-aware fine-tuning of a design (``epochs = 0``: calibration only)."""

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 64
    calib_batches: int = 4


@dataclass(frozen=True)
class MemoryTarget:
    """The voltage-scaled weight memory of the search's voltage knob: its BER ``curve``, the seed of the one chip
    every design is read through (:func:`design_chip`), the lowest voltage the chip's fault map must cover,
    the SRAM energy model and which buffer ``level`` of the accelerator holds the weights, and whether designs
    are fine-tuned with the chip's faults in the forward pass (``adapt``, at ``adapt_lr``; MATIC, Kim et al.,
    DATE 2018)."""

    curve: BerCurve
    chip_seed: int
    v_low: float
    energy: SramVoltageModel
    level: Literal["glb", "rf"] = "glb"
    adapt: bool = True
    adapt_lr: float = 1e-3

    def accelerator(self, acc: Accelerator, voltage: float) -> Accelerator:
        """``acc`` with the weight buffer's per-access energy at ``voltage``
        (:func:`crosslayer.hw.voltage.at_memory_voltage`)."""
        return at_memory_voltage(acc, voltage, self.energy, level=self.level)


@dataclass(frozen=True)
class HardwareTarget:
    """Where a design runs: the accelerator and how it uses zeros, the images that give activation densities,
    the crossbar for in-memory execution, and the voltage-scaled weight memory (None: the knob is off)."""

    accelerator: Accelerator
    inputs: torch.Tensor
    skip: str = "both"
    index_bits: int = 4
    crossbar: CrossbarSpec = field(default_factory=CrossbarSpec)
    memory: MemoryTarget | None = None


@dataclass
class BuiltDesign:
    """A design applied to a model: ``quantized`` (pruned, quantized, fine-tuned; exact multipliers) and
    ``model`` (what runs: with the approximate multipliers, or on crossbars); ``chips``: the weight memory's
    fault map per layer when the design has a ``memory_voltage`` (:func:`design_chip`)."""

    design: Design
    quantized: nn.Module
    model: nn.Module
    assignment: dict[str, str]
    exact_kept: dict[str, str]
    sparsity: float
    chips: dict[str, ChipMap] = field(default_factory=dict)


@dataclass(frozen=True)
class Measured:
    """The figures of one built design. ``energy`` is in the accelerator's units (Eyeriss: one 16-bit MAC = 1;
    crossbar energy converted with :class:`crosslayer.imc.cost.CostParams` ``digital_mac_pj``)."""

    accuracy: float
    energy: float
    latency_ms: float
    size_bytes: float
    sparsity: float
    images: int

    def objective(self, name: str) -> float:
        return {"accuracy": self.accuracy, "energy": self.energy, "latency": self.latency_ms,
                "size": self.size_bytes}[name]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _layer_masks(model: nn.Module, design: Design) -> dict[str, torch.Tensor]:
    masks: dict[str, torch.Tensor] = {}
    for name, choice in design.layers.items():
        if choice.sparsity > 0:
            m, _ = magnitude_masks(prunable_weights(model, [name]), "class-uniform", choice.sparsity)
            masks.update(m)
    return masks


def design_chip(quantized: nn.Module, design: Design, memory: MemoryTarget) -> dict[str, ChipMap]:
    """The fault map of the one chip ``memory`` describes, over the stored weights of ``design``'s layers in
    ``quantized``: per layer (in the design's order) its stretch of the memory, ``weight_bits``-bit codes packed
    one after the other, drawn by :func:`crosslayer.memory.sample_chip` from the stream
    ``(memory.chip_seed, layer index)`` down to ``memory.v_low``. With uniform banks every cell's threshold is
    independent, so per-layer stretches are the same chip model as one packed memory, while layers of different
    widths can share it (one ``chip_weights`` call needs one word width). Same seed, same chip; its faults are
    nested over voltages, so two voltages of one design compare the same chip."""
    chips: dict[str, ChipMap] = {}
    for i, name in enumerate(design.layers):
        tensors, width = memory_layout(weight_targets(quantized.get_submodule(name)))
        chips[name] = sample_chip(tensors, width, memory.curve, v_low=memory.v_low,
                                  seed=memory.chip_seed * 1_000_003 + i)
    return chips


@contextlib.contextmanager
def read_through_chip(model: nn.Module, chips: Mapping[str, ChipMap], voltage: float) -> Iterator[None]:
    """``model`` computes with the weights of the layers in ``chips`` as their chip reads them back at
    ``voltage`` (:func:`crosslayer.memory.chip_weights` per layer; the gradient reaches the float weights
    straight through); restored on exit."""
    with contextlib.ExitStack() as stack:
        for name, chip in chips.items():
            stack.enter_context(chip_weights(model.get_submodule(name), chip, voltage))
        yield


def _memory_adapt(q: nn.Module, chips: Mapping[str, ChipMap], voltage: float, data: DataSplits,
                  finetune: FineTune, memory: MemoryTarget, seed: int) -> nn.Module:
    """Memory-adaptive training (MATIC, Kim et al., DATE 2018) of a copy of ``q``: ``finetune.epochs`` with the
    chip's failing bits at ``voltage`` in every forward pass, validation read through the same chip, the best
    epoch kept with the starting weights as epoch 0, pruned zeros kept zero. The same loop as
    :func:`crosslayer.memory.memory_adaptive_train`, on the per-layer chips of :func:`design_chip` (that function
    takes one chip of one word width; a design mixes widths)."""
    net = copy.deepcopy(q)
    keep_zeros = keep_pruned_zeros(net)

    cfg = AdaptConfig(epochs=finetune.epochs, lr=memory.adapt_lr, batch_size=finetune.batch_size)
    with read_through_chip(net, chips, voltage):
        start = copy.deepcopy(net.state_dict())
        before = float(predict(net, data.val.images).argmax(1).eq(data.val.labels).to(torch.float64).mean())
        result = fit(net, data.train, data.val, cfg.train_config(), seed=seed, desc="memory-adaptive",
                     on_step=keep_zeros)
        if result.best_val_accuracy <= before:
            net.load_state_dict(start)
    return net.eval()


def build_design(model: nn.Module, design: Design, data: DataSplits, finetune: FineTune, *, seed: int = 0,
                 crossbar: CrossbarSpec | None = None, memory: MemoryTarget | None = None) -> BuiltDesign:
    """Prune, quantize (and fine-tune on ``data.train``, best epoch on ``data.val``) and approximate a copy of
    ``model`` as ``design`` says; ``model`` is not modified. A fine-tuning that diverges raises ``StageError``.

    A design with a ``memory_voltage`` needs ``memory``: its chip is drawn (:func:`design_chip`) and, with
    ``memory.adapt`` and ``finetune.epochs > 0`` at a voltage with faults, the quantized model is fine-tuned
    further with them in the forward pass (:func:`_memory_adapt`)."""
    voltage = design.memory_voltage
    if voltage is not None:
        if memory is None:
            raise StageError(f"the design runs its weight memory at {voltage:g} V but no memory model was given")
        if design.execution == "imc":
            raise StageError("a weight-memory voltage does not apply to in-memory execution")
        if any(c.multiplier != "exact" for c in design.layers.values()):
            raise StageError("a weight-memory voltage needs exact multipliers: the faults act on the quantized "
                             "layers' stored codes, which the multiplier emulation does not read through the chip")
    unknown = sorted(set(design.layers) - set(n.removesuffix(".weight") for n in prunable_weights(model)))
    if unknown:
        raise StageError(f"design names layer(s) {', '.join(unknown)}, which the model does not have")
    base = copy.deepcopy(model)
    if design.channel_cut:
        prune_structured(base, data.train.images[:1], design.channel_cut, layers=sorted(design.channel_cut))
    masks = _layer_masks(base, design)
    pruned = apply_masks(base, masks)
    cfg = QuantizeConfig(mode="qat", weight_bits=8, act_bits=8, qat_epochs=finetune.epochs, qat_lr=finetune.lr,
                         qat_batch_size=finetune.batch_size, calib_batches=finetune.calib_batches,
                         layer_weight_bits={n: c.weight_bits for n, c in design.layers.items()},
                         layer_act_bits={n: c.act_bits for n, c in design.layers.items()})
    q = quantize(pruned, cfg, data, seed=seed, masks=masks, layers=list(design.layers)).model
    chips: dict[str, ChipMap] = {}
    if voltage is not None and memory is not None:
        chips = design_chip(q, design, memory)
        if memory.adapt and finetune.epochs > 0 and memory.curve.ber(voltage) > 0:
            q = _memory_adapt(q, chips, voltage, data, finetune, memory, seed)
    if not all(bool(torch.isfinite(p).all()) for p in q.parameters()):
        raise StageError("fine-tuning diverged: the quantized model has non-finite weights")
    exact_kept = {n: r for n in design.layers if (r := approximable_reason(model, n)) is not None}
    exact_kept.update({n: f"{c.weight_bits}-bit weights / {c.act_bits}-bit activations: an exact multiplier of that "
                          f"width (the approximate ones are {MULTIPLIER_BITS} x {MULTIPLIER_BITS} designs)"
                       for n, c in design.layers.items() if c.multiplier != "exact" and n not in exact_kept
                       and (c.weight_bits, c.act_bits) != (MULTIPLIER_BITS, MULTIPLIER_BITS)})
    if design.execution == "imc":
        spec = crossbar or CrossbarSpec()
        run = to_crossbar(q, spec, seed=seed, calibration=data.train.images[:256])
        assignment: dict[str, str] = {}
    else:
        assignment = {n: c.multiplier for n, c in design.layers.items()
                      if c.multiplier != "exact" and n not in exact_kept}
        run = approximate_model(q, assignment) if assignment else q
    run.eval()
    return BuiltDesign(design, q.eval(), run, assignment, exact_kept, mask_sparsity(masks) if masks else 0.0, chips)


def measure(built: BuiltDesign, val: ImageDataset, hw: HardwareTarget) -> Measured:
    """Accuracy on ``val``, energy and latency on ``hw``, stored size, of a built design. With a
    ``memory_voltage`` the accuracy is the model's with its weights read through the design's chip at that
    voltage, and the energy the accelerator's with ``hw.memory.level``'s per-access energy scaled to it."""
    design = built.design
    voltage = design.memory_voltage
    if voltage is None:
        acc = evaluate(built.model, val).accuracy
    else:
        if hw.memory is None:
            raise StageError(f"the design runs its weight memory at {voltage:g} V but the hardware target has no "
                             "memory model")
        chips = built.chips or design_chip(built.quantized, design, hw.memory)
        with read_through_chip(built.model, chips, voltage), parametrize.cached():  # weights fixed: read once
            acc = evaluate(built.model, val).accuracy
        hw = dataclasses.replace(hw, accelerator=hw.memory.accelerator(hw.accelerator, voltage))
    if design.execution == "imc":
        _, totals = network_cost(layer_shapes(built.quantized, tuple(val.images.shape[1:])), hw.crossbar)
        energy, latency_ms = float(totals["energy_mac_units"]), float(totals["latency_s"]) * 1e3
    else:
        energy, latency_ms = hardware_cost(built.quantized, built.assignment, design.dataflow, hw)
    size = quantized_storage(built.quantized).bits / 8
    return Measured(acc, energy, latency_ms, size, built.sparsity, len(val))


def hardware_cost(quantized: nn.Module, assignment: Mapping[str, str], dataflow: str,
                  hw: HardwareTarget) -> tuple[float, float]:
    """(energy, latency in ms) of ``quantized`` on ``hw.accelerator`` with the multipliers of ``assignment``
    (their relative power); ``dataflow`` is one of the accelerator's or ``min-energy`` / ``min-latency`` (the
    cost model's best dataflow per layer)."""
    acc = hw.accelerator
    wl = extract_workload(quantized, hw.inputs, float_bits=acc.reference_bits)
    power = {n: get_multiplier(m).relative_power for n, m in assignment.items()}
    fixed = dataflow not in MIN_DATAFLOWS
    cost = cost_workload(wl, acc, dataflows=(dataflow,) if fixed else None,
                         objective="latency" if dataflow == "min-latency" else "energy",
                         sparsity=SparsityConfig(skip=hw.skip, index_bits=hw.index_bits),  # type: ignore[arg-type]
                         relative_power=power)
    return cost.total_energy, cost.total_latency_s * 1e3


def evaluate_design(model: nn.Module, design: Design, data: DataSplits, finetune: FineTune, hw: HardwareTarget, *,
                    seed: int = 0) -> tuple[BuiltDesign, Measured]:
    """:func:`build_design` then :func:`measure` on ``data.val``."""
    built = build_design(model, design, data, finetune, seed=seed, crossbar=hw.crossbar, memory=hw.memory)
    return built, measure(built, data.val, hw)


def measure_model(quantized: nn.Module, assignment: Mapping[str, str], dataset: ImageDataset, hw: HardwareTarget, *,
                  dataflow: str = "min-energy") -> Measured:
    """The figures of a model made outside the search (e.g. by the sequential flow: a quantized model and the
    multipliers chosen for its layers), measured exactly as a search point is."""
    run = approximate_model(quantized, dict(assignment)) if assignment else quantized
    acc = evaluate(run.eval(), dataset).accuracy
    energy, latency_ms = hardware_cost(quantized, assignment, dataflow, hw)
    weights = prunable_weights(quantized)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    sparsity = zeros / max(1, sum(w.numel() for w in weights.values()))
    return Measured(acc, energy, latency_ms, quantized_storage(quantized).bits / 8, sparsity, len(dataset))

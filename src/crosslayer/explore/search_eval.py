"""One design, built and measured with the library's public steps (nothing re-implemented here):

1. prune each layer to its ratio by weight magnitude (:func:`crosslayer.prune.magnitude_masks` on that layer,
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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from crosslayer.approx import approximate_model, get_multiplier
from crosslayer.data import DataSplits, ImageDataset
from crosslayer.errors import StageError
from crosslayer.explore.search_space import MIN_DATAFLOWS, MULTIPLIER_BITS, Design, approximable_reason
from crosslayer.hw import Accelerator, SparsityConfig, cost_workload
from crosslayer.hw.workload import extract_workload
from crosslayer.imc import CrossbarSpec, to_crossbar
from crosslayer.imc.cost import layer_shapes, network_cost
from crosslayer.prune import apply_masks, magnitude_masks, mask_sparsity, prunable_weights
from crosslayer.quant.pipeline import QuantizeConfig, quantize
from crosslayer.quant.storage import quantized_storage
from crosslayer.train import evaluate

__all__ = ["BuiltDesign", "FineTune", "HardwareTarget", "Measured", "build_design", "evaluate_design", "hardware_cost",
           "measure", "measure_model"]


@dataclass(frozen=True)
class FineTune:
    """Quantization-aware fine-tuning of a design (``epochs = 0``: calibration only)."""

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 64
    calib_batches: int = 4


@dataclass(frozen=True)
class HardwareTarget:
    """Where a design runs: the accelerator and how it uses zeros, the images that give activation densities,
    and the crossbar for in-memory execution."""

    accelerator: Accelerator
    inputs: torch.Tensor
    skip: str = "both"
    index_bits: int = 4
    crossbar: CrossbarSpec = field(default_factory=CrossbarSpec)


@dataclass
class BuiltDesign:
    """A design applied to a model: ``quantized`` (pruned, quantized, fine-tuned; exact multipliers) and
    ``model`` (what runs: with the approximate multipliers, or on crossbars)."""

    design: Design
    quantized: nn.Module
    model: nn.Module
    assignment: dict[str, str]
    exact_kept: dict[str, str]
    sparsity: float


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


def build_design(model: nn.Module, design: Design, data: DataSplits, finetune: FineTune, *, seed: int = 0,
                 crossbar: CrossbarSpec | None = None) -> BuiltDesign:
    """Prune, quantize (and fine-tune on ``data.train``, best epoch on ``data.val``) and approximate a copy of
    ``model`` as ``design`` says; ``model`` is not modified. A fine-tuning that diverges raises ``StageError``."""
    unknown = sorted(set(design.layers) - set(n.removesuffix(".weight") for n in prunable_weights(model)))
    if unknown:
        raise StageError(f"design names layer(s) {', '.join(unknown)}, which the model does not have")
    masks = _layer_masks(model, design)
    pruned = apply_masks(copy.deepcopy(model), masks)
    cfg = QuantizeConfig(mode="qat", weight_bits=8, act_bits=8, qat_epochs=finetune.epochs, qat_lr=finetune.lr,
                         qat_batch_size=finetune.batch_size, calib_batches=finetune.calib_batches,
                         layer_weight_bits={n: c.weight_bits for n, c in design.layers.items()},
                         layer_act_bits={n: c.act_bits for n, c in design.layers.items()})
    q = quantize(pruned, cfg, data, seed=seed, masks=masks, layers=list(design.layers)).model
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
    return BuiltDesign(design, q.eval(), run, assignment, exact_kept, mask_sparsity(masks) if masks else 0.0)


def measure(built: BuiltDesign, val: ImageDataset, hw: HardwareTarget) -> Measured:
    """Accuracy on ``val``, energy and latency on ``hw``, stored size, of a built design."""
    acc = evaluate(built.model, val).accuracy
    design = built.design
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
    built = build_design(model, design, data, finetune, seed=seed, crossbar=hw.crossbar)
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

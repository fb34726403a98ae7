"""Flow stage ``memory``: voltage-scaled weight memory (MATIC, Kim et al., DATE 2018), a thin caller of
:func:`~crosslayer.memory.api.scale_memory_voltage` and its report. Publishes artifacts ``memory_voltage`` (the
lowest voltage within the budget, adapted if adaptation won) and ``weight_memory_energy_ratio`` (energy per access
there against nominal), and model ``memory_adapted`` (chip 0's adapted model, when adaptation won).
"""

from __future__ import annotations

from typing import Any

from crosslayer.memory.adapt import ChipAccuracy
from crosslayer.memory.api import MemoryConfig, MemoryResult, scale_memory_voltage
from crosslayer.memory.plots import accuracy_vs_voltage, energy_vs_voltage
from crosslayer.report import Report
from crosslayer.stage import MEMORY_VOLTAGE, WEIGHT_MEMORY_ENERGY_RATIO, StageContext, StageResult, register_stage

__all__ = ["MemoryConfig", "memory_report"]


def _row(p: ChipAccuracy | None) -> list[Any]:
    return ["", ""] if p is None else [p.mean, p.std]


@register_stage("memory", MemoryConfig, "voltage-scaled weight SRAM: accuracy vs voltage, memory-adaptive training")
def memory_stage(ctx: StageContext, cfg: MemoryConfig) -> StageResult:
    res = scale_memory_voltage(ctx.model, cfg, ctx.data, seed=ctx.seed)
    published = {"memory_adapted": res.adapted_model} if res.adapted_model is not None else {}
    artifacts: dict[Any, Any] = {}
    if res.voltage is not None:
        artifacts = {MEMORY_VOLTAGE: res.voltage,
                     WEIGHT_MEMORY_ENERGY_RATIO: res.voltage_model.access_energy_ratio(res.voltage)}
    return StageResult(report=memory_report(res, cfg), publish=published, artifacts=artifacts)


def memory_report(res: MemoryResult, cfg: MemoryConfig) -> Report:
    """The ``memory`` report: accuracy and energy against the voltage, the chosen voltages, two figures."""
    rep = Report("memory")
    if not res.quantized:
        rep.notes.append(f"the model is not quantized: its weights are stored as {cfg.weight_bits}-bit symmetric "
                         "per-channel codes for this stage")
    if cfg.adapt and not res.adapt_voltages:
        rep.notes.append("the conventional model is within the budget at every voltage of the sweep: "
                         "no lower voltage left for memory-adaptive training")
    curve, chips, energy, vm = res.curve, res.chips, res.energy, res.voltage_model
    split, v_conv, v_adapt = res.selection_split, res.conventional_voltage, res.adapted_voltage
    conv_by_v = {p.voltage: p for p in res.conventional_test}
    rows = []
    for sp, tp in zip(res.conventional_selection, res.conventional_test, strict=True):
        v = sp.voltage
        rows.append([v, curve.ber(v), chips[0].fault_count(v), sp.mean, tp.mean, tp.std,
                     *_row(res.adapted_test.get(v)), energy[v]["buffer_ratio"], energy[v]["total_ratio"]])
    rep.add_table(f"Accuracy vs weight-memory voltage ({len(chips)} chips; test mean and std)",
                  ["voltage V", "BER", "faulty bits (chip 0)", f"{split} conventional", "test conventional",
                   "std", "test adapted", "std", f"{cfg.buffer} energy / nominal", "accelerator energy / nominal"],
                  rows)
    metrics: dict[str, Any] = {
        "curve": curve.name, "node": curve.node, "fault_mode": chips[0].mode, "chips": len(chips),
        "memory_bits": chips[0].bits, "budget_pp": cfg.budget_pp,
        "fault_free_test_accuracy": res.fault_free_test_accuracy,
        "fault_free_selection_accuracy": res.fault_free_selection_accuracy, "conventional_voltage": v_conv,
        "adapted_voltage": v_adapt, "test_samples": res.test_images, "selection_samples": res.selection_images,
    }
    for name, at, pts in (("conventional", v_conv, conv_by_v), ("adapted", v_adapt, res.adapted_test)):
        if at is None:
            continue
        metrics[f"{name}_test_accuracy"] = pts[at].mean
        metrics[f"{name}_test_accuracy_std"] = pts[at].std
        metrics[f"{name}_read_energy_saving"] = 1.0 - vm.read_energy_ratio(at)
        metrics[f"{name}_access_energy_saving"] = 1.0 - vm.access_energy_ratio(at)
        metrics[f"{name}_accelerator_energy_saving"] = 1.0 - energy[at]["total_ratio"]
    if res.test_accuracy is not None:
        metrics["test_accuracy"] = res.test_accuracy
    rep.metrics.update(metrics)
    rep.notes.append(f"BER curve {curve.name}: {curve.node}; source: {curve.source}")
    rep.notes.append(f"lowest voltage rule: walking down from {max(res.grid):g} V, the last voltage whose mean "
                     f"{split} accuracy over the chips is within {cfg.budget_pp:g} pp of the fault-free "
                     f"{res.fault_free_selection_accuracy:.4f}; test accuracy measured there")
    if cfg.adapt and v_conv is not None and v_adapt is None and res.adapted_selection:
        rep.notes.append("memory-adaptive training did not pass the budget at any lower voltage it tried")
    series = {"conventional": res.conventional_test,
              "memory-adapted (MAT, per chip)": list(res.adapted_test.values())}
    rep.figures.append(accuracy_vs_voltage(series, res.fault_free_test_accuracy, cfg.budget_pp, curve, caption=(
        f"test accuracy over {len(chips)} chips ({res.test_images} images); adapted models fine-tuned "
        f"{cfg.adapt_epochs} epoch(s) per chip at each voltage below the conventional model's lowest voltage")))
    rep.figures.append(energy_vs_voltage(vm, res.grid, {"conventional": v_conv, "adapted": v_adapt}, caption=(
        f"per-access energy of the weight memory relative to {vm.nominal_v:g} V; accelerator {cfg.accelerator}, "
        f"{cfg.buffer} buffer scaled")))
    return rep

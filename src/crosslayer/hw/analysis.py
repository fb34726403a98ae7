"""The hardware step's report tables (shared by the stage and the CLI) and :func:`analyse_model`, the
keyword form of :func:`~crosslayer.hw.api.hardware_cost` kept for the benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from crosslayer.hw.accelerator import Accelerator
from crosslayer.hw.api import CostConfig, HardwareCostResult, hardware_cost, relative_power_of, summary_metrics
from crosslayer.hw.mapping import LEVELS, Objective
from crosslayer.hw.sparsity import SparsityConfig
from crosslayer.report import Report

__all__ = ["ModelCost", "add_tables", "analyse_model", "relative_power_from_assignment", "summary_metrics"]

ModelCost = HardwareCostResult
"""The result of :func:`analyse_model` (its ``workload`` and ``cost``)."""

relative_power_from_assignment = relative_power_of


def analyse_model(model: nn.Module, inputs: torch.Tensor, acc: Accelerator, *,
                  dataflows: Sequence[str] | None = None, objective: Objective = "energy",
                  sparsity: SparsityConfig | None = None, relative_power: Mapping[str, float] | None = None,
                  float_bits: int | None = None, include_pooling: bool = True) -> HardwareCostResult:
    """Extract the workload of ``model`` on ``inputs`` and cost it on ``acc`` (:func:`hardware_cost`). Layers that
    are not quantized run at ``float_bits``, by default the accelerator's own precision (``mac.reference_bits``):
    a float model is costed as the accelerator would run it, not at 32 bits on a 16-bit array."""
    cfg = CostConfig(dataflows=tuple(dataflows or ()), objective=objective, sparsity=sparsity or SparsityConfig(),
                     relative_power=dict(relative_power or {}), float_bits=float_bits or 0,
                     include_pooling=include_pooling)
    return hardware_cost(model, acc, cfg, inputs=inputs)


def add_tables(rep: Report, current: HardwareCostResult, baseline: HardwareCostResult | None) -> None:
    """Workload, per-layer (best dataflow) and dataflow-comparison tables."""
    rep.add_table("Workload (current model)",
                  ["layer", "kind", "shape", "MACs", "weight bits", "act bits", "weight density", "act density"],
                  [[s.name, s.kind, f"{s.in_channels}x{s.in_h}x{s.in_w} -> {s.out_channels}x{s.out_h}x{s.out_w}",
                    s.macs, s.weight_bits, s.act_bits, round(s.weight_density, 4), round(s.act_density, 4)]
                   for s in current.workload])
    nc = current.cost
    rep.add_table("Per layer, best dataflow (current model)",
                  ["layer", "dataflow", "cycles", "latency ms", "utilisation", "bound",
                   *[f"E {lvl}" for lvl in LEVELS], "E total", "DRAM words", "GLB words", "NoC words", "RF words"],
                  [[c.layer, c.dataflow, c.cycles, round(c.latency_s * 1e3, 5), round(c.utilization, 4), c.bound,
                    *[round(c.energy[lvl], 1) for lvl in LEVELS], round(c.total_energy, 1),
                    *[round(c.accesses[lvl]) for lvl in ("dram", "glb", "noc", "rf")]] for c in nc.best_per_layer()])
    rows = []
    for df in (*nc.dataflows, "best"):
        row: list[Any] = [df, round(nc.energy(df), 1), round(nc.energy_per_mac(df), 3), nc.cycles(df),
                          round(nc.latency_s(df) * 1e3, 4)]
        if baseline is not None:
            b = baseline.cost
            row += [round(b.energy(df), 1), b.cycles(df), round(nc.energy(df) / b.energy(df), 4),
                    round(nc.cycles(df) / b.cycles(df), 4)]
        rows.append(row)
    cols = ["dataflow", "energy", "energy / MAC", "cycles", "latency ms"]
    if baseline is not None:
        cols += ["baseline energy", "baseline cycles", "energy ratio", "latency ratio"]
    rep.add_table("Dataflow comparison", cols, rows)
    per_layer_df = []
    for i, name in enumerate(nc.layers):
        per_layer_df.append([name, *[round(nc.per_dataflow[df][i].total_energy, 1) for df in nc.dataflows],
                             *[nc.per_dataflow[df][i].cycles for df in nc.dataflows]])
    rep.add_table("Energy and cycles of every layer under every dataflow",
                  ["layer", *[f"E {df}" for df in nc.dataflows], *[f"cycles {df}" for df in nc.dataflows]],
                  per_layer_df)

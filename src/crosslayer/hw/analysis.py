"""One call from a torch model to its hardware cost, and the report tables the stage and CLI share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crosslayer.hw.accelerator import Accelerator
from crosslayer.hw.mapping import LEVELS, Objective
from crosslayer.hw.network import NetworkCost, evaluate_network
from crosslayer.hw.shapes import LayerShape
from crosslayer.hw.sparsity import SparsityConfig
from crosslayer.hw.workload import extract_workload
from crosslayer.report import Report

__all__ = ["ModelCost", "add_tables", "analyse_model", "relative_power_from_assignment", "summary_metrics"]


@dataclass(frozen=True)
class ModelCost:
    workload: tuple[LayerShape, ...]
    cost: NetworkCost


def relative_power_from_assignment(assignment: Mapping[str, Any] | None) -> dict[str, float]:
    """``{layer: relative_power}`` from the approximate stage's ``multiplier_assignment`` artifact."""
    out: dict[str, float] = {}
    for layer, entry in (assignment or {}).items():
        if isinstance(entry, Mapping) and "relative_power" in entry:
            out[str(layer)] = float(entry["relative_power"])
    return out


def analyse_model(model: nn.Module, inputs: torch.Tensor, acc: Accelerator, *,
                  dataflows: Sequence[str] | None = None, objective: Objective = "energy",
                  sparsity: SparsityConfig | None = None, relative_power: Mapping[str, float] | None = None,
                  float_bits: int | None = None, include_pooling: bool = True) -> ModelCost:
    """Extract the workload of ``model`` on ``inputs`` and cost it on ``acc``. Layers that are not quantized
    run at ``float_bits``, by default the accelerator's own precision (``mac.reference_bits``): a float
    model is costed as the accelerator would run it, not at 32 bits on a 16-bit array."""
    bits = acc.reference_bits if float_bits is None else float_bits
    wl = extract_workload(model, inputs, float_bits=bits, include_pooling=include_pooling)
    return ModelCost(wl, evaluate_network(wl, acc, dataflows=dataflows, objective=objective, sparsity=sparsity,
                                          relative_power=relative_power))


def summary_metrics(nc: NetworkCost, prefix: str = "") -> dict[str, Any]:
    """Scalar metrics of a network cost (best per-layer mix, plus each dataflow's totals)."""
    m: dict[str, Any] = {
        f"{prefix}energy_per_inference": nc.energy("best"),
        f"{prefix}energy_per_mac": nc.energy_per_mac("best"),
        f"{prefix}latency_ms": nc.latency_s("best") * 1e3,
        f"{prefix}cycles": nc.cycles("best"),
        f"{prefix}best_dataflow": nc.best_dataflow(),
    }
    for df in nc.dataflows:
        m[f"{prefix}energy_{df}"] = nc.energy(df)
        m[f"{prefix}latency_ms_{df}"] = nc.latency_s(df) * 1e3
    return m


def add_tables(rep: Report, current: ModelCost, baseline: ModelCost | None) -> None:
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

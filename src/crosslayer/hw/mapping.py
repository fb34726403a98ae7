"""Per-layer mapping search and cost: DRAM tiling that fits the global buffer, energy and latency.

:func:`evaluate_layer` picks, for one dataflow, the best of every mapping option (tile sizes and loop order
of the DRAM tiling, :mod:`crosslayer.hw.tiling`; for RS also the register-file mapping ``(p, q)``) under
the objective, energy or latency (the other breaks ties). The options are scored together with NumPy
(:mod:`crosslayer.hw.costing`); the result is one :class:`LayerCost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from crosslayer.hw.accelerator import Accelerator, check_dataflow
from crosslayer.hw.costing import LEVELS, Scored, score_workload
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerShape
from crosslayer.hw.sparsity import SparsityConfig
from crosslayer.hw.tiling import dram_tiling

__all__ = ["LEVELS", "LayerCost", "Objective", "dram_tiling", "evaluate_layer", "layer_cost"]

Objective = Literal["energy", "latency"]


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs under one dataflow with its best mapping."""

    layer: str
    dataflow: str
    macs: int
    effective_macs: float
    compute_cycles: int
    cycles: int                      # latency: exposed DRAM + max(compute, other DRAM, GLB) cycles
    latency_s: float
    utilization: float               # effective MACs per PE-cycle of the latency
    accesses: dict[str, float]       # level -> values accessed (MAC count for "mac")
    energy: dict[str, float]         # level -> normalised energy
    tiling: dict[str, Any] = field(default_factory=dict)

    @property
    def total_energy(self) -> float:
        return float(sum(self.energy.values()))

    @property
    def bound(self) -> str:
        return str(self.tiling.get("bound", "compute"))


def check_objective(objective: str) -> None:
    if objective not in ("energy", "latency"):
        raise MappingError(f"objective = {objective!r} is unknown; allowed: 'energy', 'latency'")


def evaluate_layer(layer: LayerShape, acc: Accelerator, dataflow: str, *, objective: Objective = "energy",
                   sparsity: SparsityConfig | None = None, relative_power: float = 1.0) -> LayerCost:
    """Best mapping of ``layer`` on ``acc`` under ``dataflow``; its energy per level and its latency."""
    check_dataflow(dataflow)
    check_objective(objective)
    if dataflow not in acc.dataflows:
        raise MappingError(f"dataflow {dataflow!r} is not supported by accelerator {acc.name!r}; "
                           f"allowed: {', '.join(acc.dataflows)}")
    scored = score_workload((layer,), acc, (dataflow,), objective=objective, sparsity=sparsity,
                            relative_power={layer.name: relative_power})
    return layer_cost(scored, acc, 0, 0)


def layer_cost(scored: Scored, acc: Accelerator, j: int, i: int) -> LayerCost:
    """The :class:`LayerCost` of layer ``j`` under dataflow ``scored.dataflows[i]`` (its best option)."""
    k = int(scored.best[j, i])
    layer = scored.workload[j]
    table, col = scored.table_column(k)
    compute = int(scored.compute_cycles[k])
    cycles = int(scored.cycles[k])
    glb_cycles = float(scored.glb_cycles[k])
    dram_cycles = float(scored.dram_cycles[j])
    bound = "compute" if compute >= max(dram_cycles, glb_cycles) else ("dram" if dram_cycles >= glb_cycles else "glb")
    frac = float(scored.frac[j])
    eff = layer.macs * frac
    order, mt, pt, ct = scored.tiling_of(j)
    tiling: dict[str, Any] = {"m_tile": mt, "p_tile": pt, "c_tile": ct, "order": order}
    tiling.update({name: int(v[col]) for name, v in table.mapping.items()})
    tiling.update({"bound": bound, "exposed_dram_cycles": round(float(scored.exposed_cycles[j]), 2),
                   "imbalance": round(float(scored.imbalance[k]), 4),
                   "weight_storage_ratio": round(float(scored.weight_ratio[j]), 4),
                   "input_storage_ratio": round(float(scored.input_ratio[j]), 4)})
    return LayerCost(layer=layer.name, dataflow=scored.dataflows[i], macs=layer.macs, effective_macs=eff,
                     compute_cycles=compute, cycles=cycles, latency_s=cycles / (acc.clock_mhz * 1e6),
                     utilization=eff / (cycles * acc.pes) if cycles else 0.0,
                     accesses={lvl: float(scored.accesses[x, k]) for x, lvl in enumerate(LEVELS)},
                     energy={lvl: float(scored.energy[x, k]) for x, lvl in enumerate(LEVELS)}, tiling=tiling)

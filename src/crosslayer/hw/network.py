"""Whole-network evaluation: every layer under every dataflow, the best dataflow per layer and overall
(the survey's Step 6: "a highly efficient dataflow is decided based on the network characteristics and
the hardware architecture")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from crosslayer.hw.accelerator import Accelerator, check_dataflow
from crosslayer.hw.costing import score_workload
from crosslayer.hw.errors import MappingError
from crosslayer.hw.mapping import LEVELS, LayerCost, Objective, check_objective, layer_cost
from crosslayer.hw.shapes import LayerShape
from crosslayer.hw.sparsity import SparsityConfig

__all__ = ["NetworkCost", "WorkloadCost", "cost_workload", "evaluate_network"]


@dataclass(frozen=True)
class NetworkCost:
    """Per-dataflow layer costs of one workload on one accelerator; ``"best"`` picks per layer."""

    accelerator: str
    objective: str
    layers: tuple[str, ...]
    per_dataflow: dict[str, tuple[LayerCost, ...]]
    macs: int

    @property
    def dataflows(self) -> tuple[str, ...]:
        return tuple(self.per_dataflow)

    def best_per_layer(self) -> tuple[LayerCost, ...]:
        out = []
        for i in range(len(self.layers)):
            cands = [costs[i] for costs in self.per_dataflow.values()]
            key = ((lambda c: (c.total_energy, c.cycles)) if self.objective == "energy"
                   else (lambda c: (c.cycles, c.total_energy)))
            out.append(min(cands, key=key))
        return tuple(out)

    def costs(self, dataflow: str) -> tuple[LayerCost, ...]:
        """Layer costs of one dataflow, or ``"best"`` for the per-layer choice."""
        if dataflow == "best":
            return self.best_per_layer()
        if dataflow not in self.per_dataflow:
            raise MappingError(f"dataflow {dataflow!r} was not evaluated; allowed: best, {', '.join(self.dataflows)}")
        return self.per_dataflow[dataflow]

    def energy(self, dataflow: str) -> float:
        return float(sum(c.total_energy for c in self.costs(dataflow)))

    def cycles(self, dataflow: str) -> int:
        return int(sum(c.cycles for c in self.costs(dataflow)))

    def latency_s(self, dataflow: str) -> float:
        return float(sum(c.latency_s for c in self.costs(dataflow)))

    def breakdown(self, dataflow: str) -> dict[str, float]:
        """Energy per memory level (and MAC) summed over layers."""
        out = dict.fromkeys(LEVELS, 0.0)
        for c in self.costs(dataflow):
            for k, v in c.energy.items():
                out[k] += v
        return out

    def energy_per_mac(self, dataflow: str) -> float:
        return self.energy(dataflow) / self.macs if self.macs else 0.0

    def best_dataflow(self) -> str:
        """The single dataflow with the lowest network total under the objective."""
        if self.objective == "energy":
            return min(self.dataflows, key=lambda d: (self.energy(d), self.cycles(d)))
        return min(self.dataflows, key=lambda d: (self.cycles(d), self.energy(d)))


def _checked(workload: Sequence[LayerShape], acc: Accelerator, dataflows: Sequence[str] | None,
             objective: str) -> tuple[str, ...]:
    if not workload:
        raise MappingError("the workload is empty: the model has no conv, linear or pooling layer")
    check_objective(objective)
    dfs = tuple(dataflows) if dataflows else acc.dataflows
    for df in dfs:
        check_dataflow(df)
        if df not in acc.dataflows:
            raise MappingError(f"dataflow {df!r} is not supported by accelerator {acc.name!r}; "
                               f"allowed: {', '.join(acc.dataflows)}")
    names = [layer.name for layer in workload]
    if len(set(names)) != len(names):
        raise MappingError("layer names in the workload must be unique")
    return dfs


def evaluate_network(workload: Sequence[LayerShape], acc: Accelerator, *, dataflows: Sequence[str] | None = None,
                     objective: Objective = "energy", sparsity: SparsityConfig | None = None,
                     relative_power: Mapping[str, float] | None = None) -> NetworkCost:
    """Cost every layer of ``workload`` under each dataflow (default: all the accelerator supports).

    ``relative_power`` maps layer names to the relative power of their (approximate) multiplier.
    """
    dfs = _checked(workload, acc, dataflows, objective)
    scored = score_workload(tuple(workload), acc, dfs, objective=objective, sparsity=sparsity,
                            relative_power=relative_power)
    per = {df: tuple(layer_cost(scored, acc, j, i) for j in range(len(workload))) for i, df in enumerate(dfs)}
    return NetworkCost(accelerator=acc.name, objective=objective, layers=tuple(layer.name for layer in workload),
                       per_dataflow=per, macs=sum(layer.macs for layer in workload))


@dataclass(frozen=True)
class WorkloadCost:
    """Per-layer cost of a workload on one accelerator, each layer on its best dataflow (plain numbers).

    ``energy`` and ``cycles`` are per layer (the best option of the best dataflow under the objective);
    ``energy_by_dataflow`` / ``cycles_by_dataflow`` are ``(layers, dataflows)`` for every dataflow's best.
    """

    accelerator: str
    objective: str
    layers: tuple[str, ...]
    dataflows: tuple[str, ...]
    best_dataflow: tuple[str, ...]
    energy: np.ndarray
    cycles: np.ndarray
    latency_s: np.ndarray
    energy_by_dataflow: np.ndarray
    cycles_by_dataflow: np.ndarray

    @property
    def total_energy(self) -> float:
        return float(self.energy.sum())

    @property
    def total_latency_s(self) -> float:
        return float(self.latency_s.sum())


def cost_workload(workload: Sequence[LayerShape], acc: Accelerator, *, dataflows: Sequence[str] | None = None,
                  objective: Objective = "energy", sparsity: SparsityConfig | None = None,
                  relative_power: Mapping[str, float] | None = None) -> WorkloadCost:
    """The fast path for searches that cost thousands of configurations: the same numbers as
    :func:`evaluate_network` (per layer, best dataflow under ``objective``), without building a
    :class:`LayerCost` per layer and dataflow. Option tables and tilings are cached per layer shape, so
    repeated calls on the same network with other bit widths, densities or energies are cheaper still."""
    dfs = _checked(workload, acc, dataflows, objective)
    scored = score_workload(tuple(workload), acc, dfs, objective=objective, sparsity=sparsity,
                            relative_power=relative_power)
    n = scored.best.shape[0]
    e_df = scored.total_energy[scored.best]
    c_df = scored.cycles[scored.best]
    prim, sec = (e_df, c_df) if objective == "energy" else (c_df, e_df)
    pick = np.lexsort((sec, prim), axis=1)[:, 0]    # stable: equal keys keep the first dataflow
    idx = np.arange(n)
    cycles = c_df[idx, pick]
    return WorkloadCost(accelerator=acc.name, objective=objective, layers=tuple(s.name for s in workload),
                        dataflows=dfs, best_dataflow=tuple(dfs[k] for k in pick), energy=e_df[idx, pick],
                        cycles=cycles, latency_s=cycles / (acc.clock_mhz * 1e6), energy_by_dataflow=e_df,
                        cycles_by_dataflow=c_df)

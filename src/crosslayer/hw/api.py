"""The verb of the hardware step: :func:`hardware_cost` runs a model on real inputs, extracts its workload
(:mod:`crosslayer.hw.workload`) and costs every layer on an accelerator under each dataflow (the survey's
Step 6; energies per memory level after Eyeriss, Chen et al., ISCA 2016), picking the best dataflow per layer.

This module imports torch only inside :func:`hardware_cost`, where the workload is extracted, so
``crosslayer.hw`` and this module stay importable without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.hw.accelerator import DATAFLOWS, Accelerator, load_accelerator
from crosslayer.hw.mapping import LayerCost
from crosslayer.hw.network import NetworkCost, evaluate_network
from crosslayer.hw.shapes import LayerShape
from crosslayer.hw.sparsity import SparsityConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["CostConfig", "HardwareCostResult", "hardware_cost", "summary_metrics"]


@dataclass(frozen=True, kw_only=True)
class CostConfig(Config):
    """How to cost a model: the ``dataflows`` evaluated (empty: every one the accelerator supports), the
    ``objective`` that picks the best dataflow per layer, the zero skipping (``sparsity``, a nested
    :class:`~crosslayer.hw.sparsity.SparsityConfig`), the relative power of each layer's multiplier
    (``relative_power``, e.g. from an approximate-multiplier assignment; others 1), the width of layers that are
    not quantized (``float_bits``, 0 = the accelerator's own precision ``mac.reference_bits``) and whether
    pooling layers are costed."""

    dataflows: tuple[str, ...] = ()
    objective: Literal["energy", "latency"] = "energy"
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    relative_power: dict[str, float] = field(default_factory=dict)
    float_bits: int = 0
    include_pooling: bool = True

    def validate(self) -> None:
        for df in self.dataflows:
            if df not in DATAFLOWS:
                raise ConfigError(f"dataflows: {df!r} is unknown; allowed: {', '.join(DATAFLOWS)}")
        check_range("float_bits", self.float_bits, 0, 64)
        for name, p in self.relative_power.items():
            check_range(f"relative_power.{name}", p, 0.0)


@dataclass(frozen=True)
class HardwareCostResult:
    """The model's ``workload`` (one :class:`LayerShape` per executed layer, one inference) and its ``cost``
    (every layer under every dataflow; ``cost.costs("best")`` the per-layer choice) on ``accelerator``."""

    accelerator: Accelerator
    workload: tuple[LayerShape, ...]
    cost: NetworkCost

    @property
    def energy(self) -> float:
        """Energy of one inference with the best dataflow per layer (in 16-bit-MAC units)."""
        return self.cost.energy("best")

    @property
    def latency_ms(self) -> float:
        return self.cost.latency_s("best") * 1e3

    @property
    def layers(self) -> tuple[LayerCost, ...]:
        """Per layer: the chosen dataflow's cost (energy per level, cycles, utilisation, accesses)."""
        return self.cost.best_per_layer()

    def metrics(self) -> dict[str, Any]:
        """Flat figures: accelerator, MACs, best-mix totals and each dataflow's totals."""
        return {"accelerator": self.accelerator.name, "macs": self.cost.macs, **summary_metrics(self.cost)}


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


def hardware_cost(model: nn.Module, accelerator: Accelerator | str, config: CostConfig | None = None, *,
                  inputs: torch.Tensor | None = None, input_shape: tuple[int, ...] | None = None,
                  seed: int = 0) -> HardwareCostResult:
    """Cost ``model`` on ``accelerator`` (an :class:`Accelerator`, a preset name or a TOML file).

    ``inputs``: a batch of real samples; the activation sparsity the accelerator may skip is measured on them.
    Without them, ``input_shape`` (C, H, W) gives one seeded uniform-random sample (activation sparsity then
    reflects that sample, not real data). The model is run in eval mode and its mode restored; it is not changed.
    """
    import torch

    from crosslayer.hw.workload import extract_workload

    cfg = config or CostConfig()
    acc = load_accelerator(accelerator) if isinstance(accelerator, str) else accelerator
    if inputs is None:
        if input_shape is None:
            raise ConfigError("hardware_cost needs inputs (a batch of samples) or input_shape (C, H, W)")
        inputs = torch.rand((1, *input_shape), generator=torch.Generator().manual_seed(seed))
    bits = cfg.float_bits or acc.reference_bits
    wl = extract_workload(model, inputs, float_bits=bits, include_pooling=cfg.include_pooling)
    cost = evaluate_network(wl, acc, dataflows=cfg.dataflows or None, objective=cfg.objective,
                            sparsity=cfg.sparsity, relative_power=cfg.relative_power or None)
    return HardwareCostResult(acc, wl, cost)


def relative_power_of(assignment: Mapping[str, Any] | None) -> dict[str, float]:
    """``{layer: relative_power}`` from a ``multiplier_assignment`` (``{layer: {name, relative_power}}``)."""
    out: dict[str, float] = {}
    for layer, entry in (assignment or {}).items():
        if isinstance(entry, Mapping) and "relative_power" in entry:
            out[str(layer)] = float(entry["relative_power"])
    return out

"""Flow stage ``hardware``: the current (compressed, approximated) model and the dense baseline on an
accelerator, per layer and dataflow (thin caller of :func:`~crosslayer.hw.api.hardware_cost`); publishes
``hw_energy_per_inference`` and ``hw_energy_per_mac``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.hw.accelerator import DATAFLOWS, load_accelerator
from crosslayer.hw.analysis import add_tables
from crosslayer.hw.api import CostConfig, HardwareCostResult, hardware_cost, relative_power_of, summary_metrics
from crosslayer.hw.plots import dataflow_comparison_figure, layer_breakdown_figure, level_breakdown_figure
from crosslayer.hw.sparsity import SparsityConfig
from crosslayer.report import Report
from crosslayer.stage import (
    HW_ENERGY_PER_INFERENCE,
    HW_ENERGY_PER_MAC,
    MULTIPLIER_ASSIGNMENT,
    StageContext,
    StageResult,
    register_stage,
)

__all__ = ["HardwareConfig", "hardware_stage"]


@dataclass(frozen=True, kw_only=True)
class HardwareConfig(Config):
    """``accelerator``: a preset (eyeriss, tpu) or a TOML file; ``dataflows``: empty = all it supports;
    ``skip``: which zeros the accelerator skips for the current model (the dense baseline skips none);
    ``samples``: test images used to measure activation sparsity; ``float_bits``: the width of layers that
    are not quantized (the dense baseline's), 0 = the accelerator's own precision (``mac.reference_bits``)."""

    accelerator: str = "eyeriss"
    dataflows: tuple[str, ...] = ()
    objective: Literal["energy", "latency"] = "energy"
    skip: Literal["none", "weights", "activations", "both"] = "both"
    index_bits: int = 4
    samples: int = 64
    float_bits: int = 0
    compare_baseline: bool = True

    def validate(self) -> None:
        for df in self.dataflows:
            if df not in DATAFLOWS:
                raise ConfigError(f"hardware.dataflows: {df!r} is unknown; allowed: {', '.join(DATAFLOWS)}")
        check_range("hardware.index_bits", self.index_bits, 1, 16)
        check_range("hardware.samples", self.samples, 1, 100_000)
        check_range("hardware.float_bits", self.float_bits, 0, 64)


@register_stage("hardware", HardwareConfig, "energy, latency and best dataflow of the model on an accelerator")
def hardware_stage(ctx: StageContext, cfg: HardwareConfig) -> StageResult:
    rep = Report("hardware")
    acc = load_accelerator(cfg.accelerator)
    float_bits = cfg.float_bits or acc.reference_bits
    inputs = ctx.data.test.images[: cfg.samples]
    assignment = ctx.get(MULTIPLIER_ASSIGNMENT)
    if assignment is None:
        rep.notes.append("no multiplier_assignment artifact (approximate stage not run): exact multipliers, "
                         "relative power 1")
    cost = CostConfig(dataflows=cfg.dataflows, objective=cfg.objective, float_bits=float_bits,
                      sparsity=SparsityConfig(skip=cfg.skip, index_bits=cfg.index_bits),
                      relative_power=relative_power_of(assignment))
    current = hardware_cost(ctx.model, acc, cost, inputs=inputs)
    baseline: HardwareCostResult | None = None
    base_model = ctx.models.get("baseline")
    if cfg.compare_baseline:
        if base_model is None:
            rep.notes.append("no 'baseline' model published: no dense comparison")
        else:
            dense = CostConfig(dataflows=cfg.dataflows, objective=cfg.objective, float_bits=float_bits,
                               sparsity=SparsityConfig(skip="none"))
            baseline = hardware_cost(base_model, acc, dense, inputs=inputs)
    nc = current.cost
    rep.metrics.update(summary_metrics(nc))
    rep.metrics.update({"accelerator": acc.name, "objective": cfg.objective, "macs": nc.macs, "skip": cfg.skip,
                        "utilization": sum(c.effective_macs for c in nc.costs("best"))
                        / max(nc.cycles("best") * acc.pes, 1)})
    if baseline is not None:
        b = baseline.cost
        rep.metrics.update(summary_metrics(b, prefix="baseline_"))
        rep.metrics["energy_ratio_vs_baseline"] = nc.energy("best") / b.energy("best")
        rep.metrics["latency_ratio_vs_baseline"] = nc.cycles("best") / b.cycles("best")
        for df in nc.dataflows:
            rep.metrics[f"energy_ratio_{df}"] = nc.energy(df) / b.energy(df)
            rep.metrics[f"latency_ratio_{df}"] = nc.cycles(df) / b.cycles(df)
    add_tables(rep, current, baseline)
    models = {"current": nc} if baseline is None else {"current": nc, "baseline": baseline.cost}
    rep.figures.append(level_breakdown_figure(models))
    rep.figures.append(layer_breakdown_figure(nc))
    rep.figures.append(dataflow_comparison_figure(nc, baseline.cost if baseline else None))
    rep.notes.append(f"accelerator {acc.name} ({acc.kind}, {acc.rows}x{acc.cols} PEs, {acc.glb_bytes} B global "
                     f"buffer, {acc.clock_mhz:g} MHz); energies normalised to one 16-bit MAC (Eyeriss, ISCA 2016); "
                     f"activation sparsity measured on {inputs.shape[0]} test images; layers that are not "
                     f"quantized (the whole dense baseline) are costed at {float_bits} bits")
    best = nc.costs("best")
    rep.notes.append("best dataflow per layer: " + ", ".join(f"{c.layer}={c.dataflow}" for c in best)
                     + f"; best single dataflow: {nc.best_dataflow()}")
    return StageResult(report=rep, artifacts={HW_ENERGY_PER_INFERENCE: nc.energy("best"),
                                              HW_ENERGY_PER_MAC: nc.energy_per_mac("best")})

"""The weight-memory voltage in the accelerator cost model: energy per inference of a model at each
voltage, with the weight buffer's per-access energy scaled by :mod:`crosslayer.hw.voltage`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from crosslayer.hw import evaluate_network, load_accelerator
from crosslayer.hw.voltage import SramVoltageModel, at_memory_voltage
from crosslayer.hw.workload import extract_workload

__all__ = ["accelerator_energy"]


def accelerator_energy(model: nn.Module, inputs: torch.Tensor, accelerator: str, voltages: Sequence[float],
                       vm: SramVoltageModel, *, level: str = "glb") -> dict[float, dict[str, float]]:
    """Per voltage: the accelerator's energy per inference (best dataflow per layer, normalised MAC units),
    and its ``level`` buffer's share, each also relative to the nominal voltage."""
    acc = load_accelerator(accelerator)
    workload = extract_workload(model, inputs)
    base = evaluate_network(workload, acc)
    base_total, base_level = base.energy("best"), base.breakdown("best")[level]
    out: dict[float, dict[str, float]] = {}
    for v in voltages:
        cost = evaluate_network(workload, at_memory_voltage(acc, v, vm, level=level))
        total, buf = cost.energy("best"), cost.breakdown("best")[level]
        out[float(v)] = {"energy": total, "buffer_energy": buf, "total_ratio": total / base_total,
                         "buffer_ratio": buf / base_level if base_level else 1.0}
    return out

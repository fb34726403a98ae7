"""Weight-memory supply voltage in the cost model: energy laws, the scaled accelerator, bad input, no torch."""

from __future__ import annotations

import dataclasses
import math

import pytest

from crosslayer.hw import (
    SramVoltageModel,
    at_memory_voltage,
    conv,
    evaluate_network,
    linear,
    load_accelerator,
    memory_energy_ratio,
)
from crosslayer.hw.errors import HardwareConfigError


def test_energy_laws() -> None:
    vm = SramVoltageModel(nominal_v=1.0)
    assert vm.read_energy_ratio(0.5) == pytest.approx(0.25) and vm.read_energy_ratio(1.0) == 1.0
    assert vm.access_energy_ratio(0.6) == pytest.approx(0.36)  # leakage share 0: the CV^2 law alone
    k = 0.1 / (1.5 * 0.02585)
    assert vm.leakage_power_ratio(0.6) == pytest.approx(0.6 * math.exp(k * (0.6 - 1.0)))
    mixed = SramVoltageModel(nominal_v=0.9, leakage_share=0.4)
    v = 0.6
    assert mixed.access_energy_ratio(v) == pytest.approx(0.6 * (v / 0.9) ** 2 + 0.4 * mixed.leakage_power_ratio(v))
    assert mixed.access_energy_ratio(0.9) == pytest.approx(1.0)
    assert memory_energy_ratio(0.7) == pytest.approx(0.49)


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 0.0, 1.5, float("inf")])
def test_bad_voltages(bad: float) -> None:
    with pytest.raises(HardwareConfigError, match="voltage"):
        SramVoltageModel().access_energy_ratio(bad)


def test_bad_models() -> None:
    with pytest.raises(HardwareConfigError, match="leakage_share"):
        SramVoltageModel(leakage_share=1.5)
    with pytest.raises(HardwareConfigError, match="leakage_share"):
        SramVoltageModel(leakage_share=float("nan"))
    with pytest.raises(HardwareConfigError, match="nominal_v"):
        SramVoltageModel(nominal_v=float("nan"))
    with pytest.raises(HardwareConfigError, match="cannot be voltage-scaled; allowed: glb, rf"):
        at_memory_voltage(load_accelerator("eyeriss"), 0.5, level="dram")


def test_scaled_accelerator_changes_only_the_buffer() -> None:
    acc = load_accelerator("eyeriss")
    low = at_memory_voltage(acc, 0.5)
    assert low.energy.glb == pytest.approx(acc.energy.glb * 0.25)
    assert dataclasses.replace(low, energy=acc.energy) == acc  # nothing else moved
    workload = (conv("conv1", 1, 20, 28, 5), conv("conv2", 20, 50, 12, 5), linear("fc1", 800, 500),
                linear("fc2", 500, 10))
    nominal, scaled = evaluate_network(workload, acc), evaluate_network(workload, low)
    assert scaled.breakdown("WS")["glb"] == pytest.approx(0.25 * nominal.breakdown("WS")["glb"])
    assert scaled.breakdown("WS")["dram"] == pytest.approx(nominal.breakdown("WS")["dram"])
    assert scaled.energy("best") < nominal.energy("best")
    rf = at_memory_voltage(acc, 0.5, SramVoltageModel(leakage_share=0.5), level="rf")
    assert rf.energy.glb == acc.energy.glb and rf.energy.rf < acc.energy.rf


def test_voltage_model_imports_no_torch() -> None:
    import ast
    import inspect

    from crosslayer.hw import voltage

    tree = ast.parse(inspect.getsource(voltage))
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert mods == {"__future__", "dataclasses", "math", "crosslayer.hw.accelerator", "crosslayer.hw.errors"}

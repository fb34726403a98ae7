"""The ``memory`` flow stage: its report, metrics and artifacts; config validation; the default flow."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from crosslayer.config import from_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, DataError
from crosslayer.flow import StageContext, load_flow_config
from crosslayer.memory.stage import MemoryConfig, memory_stage
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model


def _ctx(model: nn.Module, data: DataSplits, tmp_path: Path) -> StageContext:
    small = DataSplits(train=data.train.subset(500), val=data.val.subset(300), test=data.test.subset(300))
    return StageContext(run_dir=tmp_path, flow=load_flow_config(None).flow, data=small, model=model,
                        device=torch.device("cpu"), seed=0)


def test_stage_on_a_quantized_lenet5(lenet5_trained: nn.Module, mnist_small: DataSplits, tmp_path: Path) -> None:
    q = quantize_model(copy.deepcopy(lenet5_trained), FixedPointSpec(bits=8, per_channel=True), FixedPointSpec(bits=8))
    with calibrating(q):
        q(mnist_small.train.images[:200])
    cfg = MemoryConfig(voltages=(1.0, 0.5, 0.45, 0.42), fault_mode="flip", chips=2, select_limit=0, test_limit=0,
                       adapt_limit=0, adapt_max_voltages=1, adapt_lr=1e-3, leakage_share=0.2)
    res = memory_stage(_ctx(q, mnist_small, tmp_path), cfg)
    m = res.report.metrics
    assert m["curve"] == "kc705b-28nm-probit" and m["fault_mode"] == "flip" and m["chips"] == 2
    assert not any("not quantized" in n for n in res.report.notes)
    v_conv = m["conventional_voltage"]
    assert v_conv in (1.0, 0.5, 0.45)  # at 0.42 V (BER about 17 %) no model keeps within 1 pp
    table = res.report.tables[0]
    assert [r[0] for r in table.rows] == [1.0, 0.5, 0.45, 0.42]
    bers = [r[1] for r in table.rows]
    assert bers[0] == 0.0 and bers == sorted(bers)
    assert table.rows[0][4] == pytest.approx(m["fault_free_test_accuracy"])  # BER 0: the stored words exactly
    assert table.rows[-1][4] < m["fault_free_test_accuracy"] - 0.01
    energy = [r[-2] for r in table.rows]  # buffer energy relative to nominal falls with the voltage
    assert energy[0] == pytest.approx(1.0) and energy == sorted(energy, reverse=True)
    assert m["conventional_read_energy_saving"] == pytest.approx(1 - v_conv**2)
    assert 0 <= m["conventional_accelerator_energy_saving"] < m["conventional_access_energy_saving"] + 1e-12
    assert res.artifacts["memory_voltage"] <= v_conv
    assert 0 < res.artifacts["weight_memory_energy_ratio"] <= 1
    if m["adapted_voltage"] is not None:  # adaptation won one step below the conventional voltage
        assert m["adapted_voltage"] < v_conv and "memory_adapted" in res.publish
        assert res.artifacts["memory_voltage"] == m["adapted_voltage"]
    assert [f.title for f in res.report.figures] == ["Accuracy vs weight-memory voltage",
                                                     "Weight-memory energy vs voltage"]


def test_stage_on_a_float_model_without_adaptation(lenet5_trained: nn.Module, mnist_small: DataSplits,
                                                   tmp_path: Path) -> None:
    cfg = MemoryConfig(curve="kc705b-28nm", chips=1, adapt=False, select_limit=0, test_limit=0)
    res = memory_stage(_ctx(lenet5_trained, mnist_small, tmp_path), cfg)
    m = res.report.metrics
    assert any("not quantized" in n for n in res.report.notes)
    assert m["fault_mode"] == "stuck0" and m["memory_bits"] == 8 * (500 + 25000 + 400000 + 5000)
    # the measured KC705-B range (BER <= 1.6e-4) costs this network nothing: the whole range is within budget
    assert m["conventional_voltage"] == 0.53 and m["adapted_voltage"] is None
    assert "adapted_test_accuracy" not in m and not res.publish


@pytest.mark.parametrize(("raw", "error", "message"), [
    ({"voltages": [0.5, float("nan")]}, ConfigError, r"voltages\[1\] = nan is not a finite number"),
    ({"voltages": [0.5, 0.5]}, ConfigError, "twice"),
    ({"voltages": [0.3]}, ConfigError, "outside curve"),
    ({"curve": "kc705b-28nm", "voltages": [0.52]}, ConfigError, r"\[0.53, 1\]"),
    ({"curve": "sram9"}, ConfigError, "unknown BER curve"),
    ({"curve": "missing/table.csv"}, DataError, "does not exist"),
    ({"nominal_voltage": float("nan")}, ConfigError, "finite"),
    ({"p_stuck_one": 1.5}, ConfigError, "p_stuck_one"),
    ({"fault_mode": "melt"}, ConfigError, "fault_mode"),
    ({"chips": 0}, ConfigError, "chips"),
    ({"budget_pp": float("nan")}, ConfigError, "finite"),
    ({"buffer": "dram"}, ConfigError, "buffer"),
])
def test_config_errors(raw: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        from_mapping(MemoryConfig, raw, section="memory")


def test_user_table_in_the_config(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("0.40, 1e-2\n0.42, 1e-3\n0.41, 1e-4\n")
    with pytest.raises(DataError, match="strictly increasing"):
        from_mapping(MemoryConfig, {"curve": str(f)}, section="memory")
    f.write_text("0.40, 1e-2\n0.45, 1e-4\n0.50, 0\n")
    cfg = from_mapping(MemoryConfig, {"curve": str(f), "nominal_voltage": 0.8}, section="memory")
    assert cfg.grid(cfg.resolve()) == (0.8, 0.5, 0.45, 0.4)


def test_default_flow_runs_the_memory_stage_after_hardware() -> None:
    flow = load_flow_config(None)
    stages = list(flow.flow.stages)
    assert "memory" in stages and stages.index("memory") > stages.index("quantize")
    assert isinstance(flow.stage_configs["memory"], MemoryConfig)

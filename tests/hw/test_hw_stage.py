"""The ``hardware`` flow stage after ``baseline`` (and with a compressed current model), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.flow import StageContext, load_flow_config, run_flow
from crosslayer.hw.stage import HardwareConfig, hardware_stage
from crosslayer.quant.fixed_point import FixedPointSpec
from crosslayer.quant.layers import calibrating, quantize_model


def test_stage_in_a_small_flow(tmp_path: Path) -> None:
    toml = tmp_path / "flow.toml"
    toml.write_text('[flow]\nstages = ["baseline", "hardware"]\ntrain_limit = 2000\ntest_limit = 500\n'
                    '[baseline]\nepochs = 1\n[hardware]\nsamples = 16\n')
    reports = run_flow(load_flow_config(toml), tmp_path / "run")
    rep = reports[-1]
    assert rep.stage == "hardware"
    m = rep.metrics
    assert m["best_dataflow"] in ("RS", "WS", "OS")
    assert m["energy_per_inference"] <= min(m["energy_RS"], m["energy_WS"], m["energy_OS"]) + 1e-6
    assert m["energy_per_mac"] == pytest.approx(m["energy_per_inference"] / m["macs"])
    # the current model is the baseline itself: only activation skipping separates them
    assert 0.5 < m["energy_ratio_vs_baseline"] <= 1.0
    assert len(rep.figures) == 3 and len(rep.tables) == 4
    assert any("multiplier_assignment" in n for n in rep.notes)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["hardware"]["energy_per_inference"] == pytest.approx(m["energy_per_inference"])


def test_compressed_model_is_cheaper_and_artifacts_published(lenet5_trained: nn.Module, mnist_small: DataSplits,
                                                              tmp_path: Path) -> None:
    import copy

    baseline = copy.deepcopy(lenet5_trained)
    with torch.no_grad():
        for mod in lenet5_trained.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                thr = mod.weight.abs().flatten().kthvalue(int(0.9 * mod.weight.numel())).values
                mod.weight[mod.weight.abs() <= thr] = 0.0
    quantize_model(lenet5_trained, FixedPointSpec(bits=8), FixedPointSpec(bits=8, signed=False, symmetric=False))
    with calibrating(lenet5_trained):
        lenet5_trained(mnist_small.train.images[:256])
    from crosslayer.flow import FlowConfig

    ctx = StageContext(run_dir=tmp_path, flow=FlowConfig(), data=mnist_small, model=lenet5_trained,
                       device=torch.device("cpu"), seed=0, models={"baseline": baseline},
                       artifacts={"multiplier_assignment": {"fc1": {"name": "mul8u_x", "relative_power": 0.5}}})
    res = hardware_stage(ctx, HardwareConfig(accelerator="tpu", samples=16))
    m = res.report.metrics
    for df in ("WS", "OS", "IS"):
        assert m[f"energy_ratio_{df}"] < 0.25      # 10 % weights at 8 bits vs dense fp32
        assert m[f"latency_ratio_{df}"] <= 1.0
    assert res.artifacts["hw_energy_per_inference"] == pytest.approx(m["energy_per_inference"])
    assert res.artifacts["hw_energy_per_mac"] == pytest.approx(m["energy_per_mac"])
    assert not any("multiplier_assignment" in n for n in res.report.notes)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="hardware.dataflows: 'ZZ' is unknown"):
        HardwareConfig(dataflows=("ZZ",)).validate()
    with pytest.raises(ConfigError, match="hardware.samples"):
        HardwareConfig(samples=0).validate()


def test_cli_presets_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["hw", "presets", "--json"])
    assert res.exit_code == 0 and set(json.loads(res.stdout)) == {"eyeriss", "tpu"}
    res = runner.invoke(app, ["hw", "cost", "--accelerator", "nope"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["hw", "cost", "-a", "tpu", "--dataflow", "RS"])
    assert res.exit_code == 2
    out = tmp_path / "hw.json"
    res = runner.invoke(app, ["hw", "cost", "-a", "tpu", "--samples", "8", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["macs"] == 2_293_000 and data["best_dataflow"] in ("WS", "OS", "IS")
    assert json.loads(out.read_text())["stage"] == "hardware"

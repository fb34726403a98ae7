"""The ``resilience`` flow stage on a float model (in a flow) and on a quantized one, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.flow import StageContext, available_stages, load_flow_config, run_flow
from crosslayer.resilience.stage import ResilienceConfig, resilience_stage

LIGHT = dict(test_subset=100, injections=3, bers=(1e-3,), ber_trials=1, noise_trials=1)


def test_flow_on_float_model(tmp_path: Path) -> None:
    toml = tmp_path / "flow.toml"
    toml.write_text('[flow]\nstages = ["baseline", "resilience"]\ntrain_limit = 2000\ntest_limit = 300\n'
                    '[baseline]\nepochs = 1\n[resilience]\ntest_subset = 100\ninjections = 3\nbits = [30, 22]\n'
                    'bers = [0.001]\nber_trials = 1\nnoise_trials = 1\n')
    reports = run_flow(load_flow_config(toml), tmp_path / "run")
    rep = reports[-1]
    assert rep.stage == "resilience"
    assert rep.metrics["representation"] == "float32" and rep.metrics["injections"] == 4 * 3 * 2
    assert sorted(rep.metrics["resilience_ranking"]) == ["conv1", "conv2", "fc1", "fc2"]
    assert len(rep.figures) == 2 and any("layer x bit" in f.title for f in rep.figures)
    assert any(t.title.startswith("Single-bit-flip") for t in rep.tables)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 < metrics["resilience"]["test_accuracy"] <= 1.0


def test_stage_on_quantized_model(lenet5_int8: nn.Module, mnist_small: DataSplits, tmp_path: Path) -> None:
    ctx = StageContext(run_dir=tmp_path, flow=load_flow_config().flow, data=mnist_small, model=lenet5_int8,
                       device=torch.device("cpu"), seed=0)
    res = resilience_stage(ctx, ResilienceConfig(**LIGHT, rank_by="bitflip"))  # type: ignore[arg-type]
    ranking = res.artifacts["resilience_ranking"]
    drops = res.artifacts["resilience_drop_pp"]
    assert sorted(ranking) == ["conv1", "conv2", "fc1", "fc2"] and set(drops) == set(ranking)
    assert [drops[n] for n in ranking] == sorted(drops.values())
    assert res.report.metrics["representation"] == "sint8"
    assert res.report.metrics["injections"] == 4 * 8 * 3
    assert res.model is None  # the stage analyses, it does not change the model
    assert lenet5_int8.conv1.weight_spec is not None


def test_config_validation() -> None:
    assert "resilience" in available_stages()
    with pytest.raises(ConfigError, match="resilience.margin"):
        ResilienceConfig(margin=0.0).validate()
    with pytest.raises(ConfigError, match="resilience.bers"):
        ResilienceConfig(bers=(2.0,)).validate()


def test_cli_faults(lenet5_trained: nn.Module, tmp_path: Path) -> None:
    from crosslayer.cli.main import app

    weights = tmp_path / "w.pt"
    torch.save(lenet5_trained.state_dict(), weights)
    runner = CliRunner()
    args = ["faults", "--weights", str(weights), "--test-limit", "100"]
    ok = runner.invoke(app, [*args, "--layer", "fc2", "--bits", "30,0", "-n", "5", "--json", "--out",
                             str(tmp_path / "o")])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["injections"] == 10 and data["resilience_ranking"] == ["fc2"]
    assert (tmp_path / "o" / "faults.json").is_file() and (tmp_path / "o" / "report.html").is_file()
    bad_bit = runner.invoke(app, [*args, "--bits", "32"])
    assert bad_bit.exit_code == 2 and "beyond the 32-bit word" in bad_bit.output
    bad_ber = runner.invoke(app, [*args, "--ber", "1.5"])
    assert bad_ber.exit_code == 2 and "not a bit-error rate" in bad_ber.output
    bad_layer = runner.invoke(app, [*args, "--layer", "fc9"])
    assert bad_layer.exit_code == 2 and "'fc9' does not exist" in bad_layer.output
    no_codes = runner.invoke(app, [*args, "--representation", "codes", "--code-bits", "1"])
    assert no_codes.exit_code == 2 and "--code-bits" in no_codes.output

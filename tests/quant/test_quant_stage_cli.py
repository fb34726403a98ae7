"""The ``quantize`` flow stage after ``baseline`` and the ``crosslayer quantize`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.flow import load_flow_config, load_run_model, run_flow
from crosslayer.quant import QuantLayer, weight_codes


@pytest.fixture
def lenet5_weights(lenet5_trained: nn.Module, tmp_path: Path) -> Path:
    path = tmp_path / "lenet5.pt"
    torch.save(lenet5_trained.state_dict(), path)
    return path


def test_quantize_stage_in_flow(lenet5_weights: Path, tmp_path: Path, data_dir: Path) -> None:
    toml = tmp_path / "flow.toml"
    toml.write_text(f"""
[flow]
stages = ["baseline", "quantize"]
train_limit = 2000
test_limit = 500
weights = "{lenet5_weights}"
[baseline]
epochs = 1
[quantize]
weight_bits = 6
act_bits = 8
calib_batches = 2
sweep = true
sweep_bits = [8, 3]
sweep_per_layer = false
""")
    run = tmp_path / "run"
    reports = run_flow(load_flow_config(toml, {"data_dir": str(data_dir)}), run)
    rep = reports[-1]
    m = rep.metrics
    base = reports[0].metrics["test_accuracy"]
    assert m["test_accuracy"] >= base - 0.01
    assert m["weight_bits_total"] < m["dense_fp32_bits"] / 4
    assert 4.5 < m["compression_ratio"] < 5.4  # 6-bit weights, fp32 biases and scales
    assert m["sweep_lossless_bits"] in (8, 3, None)
    assert any(f.title == "Accuracy vs. bit width" for f in rep.figures)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["quantize"]["compression_ratio"] == pytest.approx(m["compression_ratio"])
    model = load_run_model(run)
    assert all(isinstance(model.get_submodule(n), QuantLayer) for n in ("conv1", "conv2", "fc1", "fc2"))
    assert int(weight_codes(model, "fc1").codes.abs().max()) <= 31


def test_quantize_cli_and_bad_input(lenet5_weights: Path, tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "q"
    args = ["quantize", "--weights", str(lenet5_weights), "--bits", "8", "--act-bits", "8", "--train-limit", "1000",
            "--test-limit", "300", "--data-dir", str(data_dir), "--out", str(out), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert metrics["mode"] == "ptq" and metrics["test_accuracy"] > 0.9
    assert (out / "report.html").is_file() and (out / "checkpoints" / "quantized.pt").is_file()
    bad = runner.invoke(app, ["quantize", "--weights", str(lenet5_weights), "--bits", "17", "--out", str(out)])
    assert bad.exit_code == 2 and "weight_bits = 17 is out of range" in bad.output
    none = runner.invoke(app, ["quantize", "--out", str(out)])
    assert none.exit_code == 2 and "nothing to run quantize on" in none.output

"""The ``imc`` flow stage after ``baseline`` and the ``crosslayer imc`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.data import DataSplits
from crosslayer.flow import FlowConfig, StageContext, load_flow_config, run_flow
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.imc.stage import ImcConfig, imc_stage

FLOW = """
[flow]
stages = ["baseline", "imc"]
train_limit = 1500
test_limit = 300

[baseline]
epochs = 1

[imc]
sigmas = [0.0, 0.8]
adc_bits_sweep = [3, 8]
seeds = 1
eval_limit = 150
calibration_images = 64
aware_limit = 200

[imc.crossbar]
d2d_sigma = 0.5
"""


@pytest.fixture(scope="module")
def imc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("imc")
    (d / "flow.toml").write_text(FLOW)
    run_flow(load_flow_config(d / "flow.toml"), d / "run")
    return d / "run"


def test_stage_report(imc_run: Path) -> None:
    metrics = json.loads((imc_run / "metrics.json").read_text())["imc"]
    for key in ("test_accuracy", "clean_accuracy", "noisy_accuracy_standard", "noisy_accuracy_aware",
                "imc_energy_pj", "imc_area_mm2"):
        assert key in metrics
    assert 0.0 <= metrics["noisy_accuracy_standard"] <= 1.0
    assert metrics["imc_energy_pj"] > 0 and metrics["imc_tiles"] == 65
    assert metrics["aware_train_images"] == 200  # aware_limit: the fine-tuning's subset of the 1,350 images
    rep = json.loads((imc_run / "reports" / "imc.json").read_text())
    assert len(rep["figures"]) == 3
    titles = [t["title"] for t in rep["tables"]]
    assert "Accuracy vs variation" in titles and "Crossbar cost per layer (per inference)" in titles
    sweep = next(t for t in rep["tables"] if t["title"] == "Accuracy vs ADC bits")
    assert [r[0] for r in sweep["rows"]] == [3.0, 8.0]
    assert any("hw_energy_per_inference" in n for n in rep["notes"])


def test_cli_simulate_energy_and_errors(imc_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["imc", "simulate", str(imc_run), "--stage", "baseline", "--sigma", "0.2",
                            "--chips", "2", "--test-limit", "100", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["chips"] == 2 and len(out["per_chip"]) == 2 and 0 <= out["crossbar_accuracy"] <= 1
    assert out["images"] == 100
    r = runner.invoke(app, ["imc", "energy", "--json", "--adc-bits", "6"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["layers"]) == 4
    r2 = runner.invoke(app, ["imc", "energy", str(imc_run), "--json", "--adc-bits", "6"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout)["energy_pj"] == pytest.approx(json.loads(r.stdout)["energy_pj"])  # same shapes
    spec = tmp_path / "bad.toml"
    spec.write_text("[crossbar]\ng_min = 30.0\ng_max = 25.0\n")
    r = runner.invoke(app, ["imc", "energy", "--spec", str(spec)])
    assert r.exit_code == 2 and "g_min" in r.output
    r = runner.invoke(app, ["imc", "simulate", str(imc_run), "--sigma", "-1"])
    assert r.exit_code == 2 and "d2d_sigma" in r.output
    r = runner.invoke(app, ["imc", "simulate"])
    assert r.exit_code == 2 and "RUN_DIR" in r.output and "--weights" in r.output


def test_cli_train_writes_a_run_directory(imc_run: Path, tmp_path: Path) -> None:
    """`imc train --out` leaves a run directory that the other commands accept (here `imc simulate` and `eval`)."""
    runner = CliRunner()
    out = tmp_path / "aware"
    r = runner.invoke(app, ["imc", "train", str(imc_run), "--sigma", "0.5", "--epochs", "1", "--train-limit", "600",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert 0.5 < m["test_accuracy"] <= 1 and m["d2d_sigma"] == 0.5 and m["epochs"] == 1
    assert json.loads((out / "metrics.json").read_text())["imc_train"]["test_accuracy"] == m["test_accuracy"]
    assert not list(out.glob("*.pt")), "a run directory, not a bare state dict"
    r = runner.invoke(app, ["eval", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["test_accuracy"] == pytest.approx(m["test_accuracy"])
    r = runner.invoke(app, ["imc", "simulate", str(out), "--chips", "1", "--test-limit", "50", "--json"])
    assert r.exit_code == 0, r.output


def test_stage_next_to_digital_accelerator(lenet5_trained, mnist_small, tmp_path: Path) -> None:
    data = DataSplits(mnist_small.train.subset(256), mnist_small.val.subset(100), mnist_small.test.subset(100))
    ctx = StageContext(run_dir=tmp_path, flow=FlowConfig(), data=data, model=lenet5_trained,
                       device=torch.device("cpu"), seed=0, artifacts={"hw_energy_per_inference": 2.0e6})
    cfg = ImcConfig(crossbar=CrossbarSpec(d2d_sigma=0.3), sigmas=(0.3,), adc_bits_sweep=(8,), seeds=1,
                    eval_limit=100, calibration_images=32, source="baseline")
    res = imc_stage(ctx, cfg)
    m = res.report.metrics
    assert m["digital_energy_mac_units"] == 2.0e6
    assert m["imc_vs_digital_energy"] == pytest.approx(m["imc_energy_mac_units"] / 2.0e6)
    assert "imc_aware" in res.publish and res.model is None
    assert res.artifacts["imc_energy_per_inference_pj"] == pytest.approx(m["imc_energy_pj"])
    assert any("no published 'baseline'" in n for n in res.report.notes)
    table = next(t for t in res.report.tables if t.title.startswith("Energy per inference"))
    assert len(table.rows) == 2

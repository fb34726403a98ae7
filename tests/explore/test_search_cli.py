"""`crosslayer search` end to end (a run directory with the study, trials, report) and the search stage's
sequential-flow point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.data import DataSplits
from crosslayer.explore.search import SearchConfig
from crosslayer.explore.search_eval import HardwareTarget, measure_model
from crosslayer.explore.search_stage import sequential_point
from crosslayer.hw import load_accelerator
from crosslayer.quant import QuantizeConfig, quantize
from crosslayer.stage import FlowConfig, StageContext

runner = CliRunner()


@pytest.fixture
def weights(lenet5_trained, tmp_path: Path) -> Path:
    path = tmp_path / "lenet5.pt"
    torch.save(lenet5_trained.state_dict(), path)
    return path


def test_search_command_writes_a_run_with_the_study_and_report(weights: Path, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--model", "lenet5", "--weights", str(weights), "--trials", "3", "--trial-epochs", "0",
            "--final-points", "1", "--final-epochs", "0", "--budget", "100",  # untuned trials: any loss is finished
            "--train-limit", "600", "--test-limit", "300",
            "--data-dir", str(data_dir), "--out", str(out), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert metrics["trials"] == 3 and metrics["trial_states"] == {"COMPLETE": 3}
    assert metrics["objectives"] == ["accuracy", "energy"] and metrics["sampler"] == "tpe"
    assert (out / "stages" / "search" / "study.db").is_file()
    trials = json.loads((out / "stages" / "search" / "trials.json").read_text())
    assert [t["number"] for t in trials["trials"]] == [0, 1, 2] and trials["final"]
    assert metrics["chosen_trial"] == trials["chosen"] and 0.0 < metrics["test_accuracy"] <= 1.0
    html = (out / "report.html").read_text()
    assert "Pareto fronts" in html and "Per-layer configuration" in html and "parallel coordinates" in html
    again = runner.invoke(app, args)  # the same run: resumed, nothing re-run
    assert again.exit_code == 0 and json.loads(again.stdout)["trials"] == 3


def test_search_command_errors_are_one_line(weights: Path, tmp_path: Path) -> None:
    note = tmp_path / "notes.txt"
    note.write_text("x")
    res = runner.invoke(app, ["search", str(note), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "neither a flow TOML file nor a run directory" in res.output
    res = runner.invoke(app, ["search", "--model", "lenet5", "--weights", str(weights), "--objectives",
                              "accuracy,speed", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "objective 'speed' is unknown" in res.output
    flow = tmp_path / "flow.toml"
    flow.write_text(f'[flow]\nweights = "{weights}"\nstages = ["evaluate"]\n')
    res = runner.invoke(app, ["search", str(flow), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not run the 'search' stage" in res.output
    res = runner.invoke(app, ["search", "--model", "lenet5", "--weights", str(weights), "--storage", "nowhere://x",
                              "--out", str(tmp_path / "o"), "--train-limit", "300", "--test-limit", "100"])
    assert res.exit_code == 2 and "cannot open the study storage" in res.output


def test_sequential_point_is_measured_like_a_search_point(lenet5_trained, mnist_small: DataSplits) -> None:
    data = DataSplits(mnist_small.train.subset(500), mnist_small.val, mnist_small.test.subset(300))
    q = quantize(lenet5_trained, QuantizeConfig(weight_bits=8, act_bits=8), data).model
    ctx = StageContext(run_dir=None, flow=FlowConfig(), data=data, model=q, device=torch.device("cpu"), seed=0,
                       artifacts={"multiplier_assignment": {"fc1": {"name": "drum5", "relative_power": 0.77}}})
    notes: list[str] = []
    cfg = SearchConfig(hw_samples=16)
    point = sequential_point(ctx, cfg, notes)
    hw = HardwareTarget(load_accelerator("eyeriss"), data.val.images[:16])
    ref = measure_model(q, {"fc1": "drum5"}, data.test, hw)
    assert point == {"test_accuracy": ref.accuracy, "energy": ref.energy, "latency_ms": ref.latency_ms,
                     "size_bytes": ref.size_bytes}
    exact = measure_model(q, {}, data.test, hw)
    assert ref.energy < exact.energy  # the multiplier's relative power reaches the cost model
    ctx.model = lenet5_trained
    assert sequential_point(ctx, cfg, notes) is None and "did not quantize" in notes[-1]


def test_codesign_flow_validates_and_runs_the_sequential_flow_before_the_search() -> None:
    from crosslayer.flow import load_flow_config

    path = Path(__file__).resolve().parents[2] / "src" / "crosslayer" / "flows" / "codesign.toml"
    resolved = load_flow_config(path)
    stages = resolved.flow.stages
    assert stages[-1] == "search" and stages.index("quantize") < stages.index("approximate") < stages.index("search")
    cfg = resolved.stage_configs["search"]
    assert isinstance(cfg, SearchConfig) and cfg.trials == 40 and cfg.objectives == ("accuracy", "energy")
    assert cfg.max_channel_cut == 0.75 and cfg.warm_start[-1] == (0.8, 6, 8, 0.5)

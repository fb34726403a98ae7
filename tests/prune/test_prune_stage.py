"""The `prune` flow stage after `baseline`, and the `crosslayer prune` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.flow import load_flow_config, load_run_model, run_flow

FLOW = """
[flow]
model = "lenet5"
stages = ["baseline", "prune"]
train_limit = 1500
test_limit = 300

[baseline]
epochs = 1
optimizer = "adam"
lr = 0.002
weight_decay = 0.0

[prune]
targets = [0.5, 0.8]
budget_pp = 5.0
finetune_epochs = 1
"""


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    d = tmp_path_factory.mktemp("flow")
    (d / "flow.toml").write_text(FLOW)
    run_flow(load_flow_config(d / "flow.toml"), d / "run")
    return d / "run"


def test_stage_metrics_tables_plot(flow_run: Path) -> None:
    metrics = json.loads((flow_run / "metrics.json").read_text())["prune"]
    assert metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    assert metrics["compression_ratio"] > 3.0  # 5x fewer values, minus index bits
    dense_bits = 32 * 431080
    assert metrics["weight_bits_total"] == pytest.approx(dense_bits / metrics["compression_ratio"], rel=1e-6)
    rep = json.loads((flow_run / "reports" / "prune.json").read_text())
    titles = [t["title"] for t in rep["tables"]]
    assert "Pruning steps" in titles and "Per-layer sparsity (kept model)" in titles
    steps = next(t for t in rep["tables"] if t["title"] == "Pruning steps")
    assert len(steps["rows"]) == 3
    assert rep["figures"][0]["title"] == "Accuracy vs. sparsity"
    assert (flow_run / "stages" / "prune" / "schedule_state.pt").is_file()


def test_stage_publishes_pruned_and_keeps_baseline_dense(flow_run: Path) -> None:
    pruned = load_run_model(flow_run, "prune")
    base = load_run_model(flow_run, "baseline")
    zero = lambda m: sum(int((p == 0).sum()) for n, p in m.named_parameters() if n.endswith("weight"))  # noqa: E731
    assert zero(base) == 0
    assert zero(pruned) == pytest.approx(0.8 * 430500, abs=5)  # 430,500 conv/fc weights in LeNet-5


def test_stage_resumes_from_its_state(flow_run: Path, tmp_path: Path) -> None:
    # re-running the same flow in the same folder reuses every finished stage: same numbers
    before = json.loads((flow_run / "metrics.json").read_text())["prune"]
    (tmp_path / "flow.toml").write_text(FLOW)
    reps = run_flow(load_flow_config(tmp_path / "flow.toml"), flow_run)
    after = json.loads((flow_run / "metrics.json").read_text())
    assert after["prune"]["test_accuracy"] == before["test_accuracy"] == reps[-1].metrics["test_accuracy"]
    assert after["flow"]["resumed"] == ["baseline", "prune"]
    # a prune stage killed half-way (not recorded as finished) resumes from its schedule's state file
    state = json.loads((flow_run / "run.json").read_text())
    state["done"] = state["done"][:1]
    (flow_run / "run.json").write_text(json.dumps(state))
    reps = run_flow(load_flow_config(tmp_path / "flow.toml"), flow_run)
    assert reps[-1].metrics["sparsity"] == before["sparsity"]
    assert any("resumed from the state file" in n for n in reps[-1].notes)
    assert json.loads((flow_run / "metrics.json").read_text())["flow"]["resumed"] == ["baseline"]


def test_cli_prune_weights_and_run_dir(flow_run: Path, tmp_path: Path, lenet300_trained: nn.Module) -> None:
    w = tmp_path / "w.pt"
    torch.save(lenet300_trained.state_dict(), w)
    runner = CliRunner()
    res = runner.invoke(app, ["prune", "--model", "lenet300", "--weights", str(w), "--targets", "0.6",
                              "--train-limit", "1000", "--test-limit", "200", "--budget", "50", "--json",
                              "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["sparsity"] == pytest.approx(0.6, abs=1e-3) and out["scheme"] == "class-blind"
    assert (tmp_path / "p" / "report.html").is_file()
    pruned = load_run_model(tmp_path / "p")
    assert sum(int((p == 0).sum()) for p in pruned.parameters()) > 0.5 * 266200
    res = runner.invoke(app, ["prune", str(flow_run), "--structured", "--targets", "0.5", "--budget", "50",
                              "--epochs", "0", "--json", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["structured"] is True and out["params"] < 0.3 * 431080
    # the physically smaller model is a run directory every other command reads (architecture record)
    small = load_run_model(tmp_path / "s")
    assert sum(p.numel() for p in small.parameters()) == out["params"]
    assert small(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    res = runner.invoke(app, ["quantize", str(tmp_path / "s"), "--test-limit", "200", "--train-limit", "500",
                              "--json", "--out", str(tmp_path / "sq")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--budget", "-1"], "budget_pp = -1.0 is out of range"),
    (["--scheme", "random"], "class-blind"),
    (["--targets", "0.5,abc"], "comma-separated"),
    (["--targets", "1.2"], "targets[0] = 1.2 is out of range"),
    ([], "nothing to run prune on"),
])
def test_cli_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["prune", "--out", str(tmp_path / "x"), *args])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())

"""The commands rebuilt on the verbs take a run directory of a user model through the one option group:
``faults``, ``approx select`` and ``hw cost`` on a flow run of a user CNN with functional ops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.flow import load_flow_config, run_flow
from user_models import USER_MODELS_FILE

runner = CliRunner()
SPEC = f"{USER_MODELS_FILE}:functional_cnn"


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    d = tmp_path_factory.mktemp("userrun")
    (d / "flow.toml").write_text(f'[flow]\nmodel = "{SPEC}"\nstages = ["baseline"]\ntrain_limit = 1500\n'
                                 'test_limit = 300\n[baseline]\nepochs = 1\n')
    run_flow(load_flow_config(d / "flow.toml"), d / "run")
    return d / "run"


def test_faults_approx_and_hw_on_a_user_run(user_run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["faults", str(user_run), "--model", SPEC, "--bits", "30", "-n", "3",
                              "--test-limit", "100", "--json", "--out", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    faults = json.loads(res.stdout)
    assert faults["images"] == 100 and faults["injections"] == 3 * len(faults["layers"]) > 0
    assert (tmp_path / "f" / "report.html").is_file()
    res = runner.invoke(app, ["approx", "select", str(user_run), "--model", SPEC, "--names", "exact,trunc6",
                              "--select-limit", "100", "--test-limit", "100", "--budget", "2", "--json"])
    assert res.exit_code == 0, res.output
    sel = json.loads(res.stdout)
    assert sel["selection_accuracy_loss_pp"] <= 2 + 1e-9 and sel["selection_images"] == 100
    assert set(sel["assignment"]) == set(sel["ranking"]) and len(sel["ranking"]) == len(faults["layers"])
    res = runner.invoke(app, ["hw", "cost", str(user_run), "--model", SPEC, "--samples", "8", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["macs"] == 184_256  # the functional CNN's MACs (tests/hw/test_hw_trace.py)
    res = runner.invoke(app, ["faults", str(user_run), "--json"])  # the run's user factory must be named
    assert res.exit_code == 2 and "--model" in res.output

"""``crosslayer memory curve / sweep / train`` and their errors (one line, exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from crosslayer.cli.main import app

runner = CliRunner()


def test_curve_json_and_bad_input(tmp_path: Path) -> None:
    res = runner.invoke(app, ["memory", "curve", "--curve", "kc705b-28nm", "--voltages", "0.6,0.55,0.53",
                              "--leakage-share", "0.3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["curve"] == "kc705b-28nm" and [p["voltage"] for p in doc["points"]] == [0.6, 0.55, 0.53]
    assert doc["points"][2]["ber"] == pytest.approx(2274 / (445 * 1024 * 32))
    assert all(p["access_energy"] == pytest.approx(0.7 * p["read_energy"] + 0.3 * p["leakage_power"])
               for p in doc["points"])
    for args, message in ((["--voltages", "0.5,nan"], "not a voltage"), (["--voltages", "abc"], "comma-separated"),
                          (["--curve", str(tmp_path / "none.csv")], "does not exist"),
                          (["--leakage-share", "2"], "leakage_share")):
        bad = runner.invoke(app, ["memory", "curve", *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    table = tmp_path / "t.csv"
    table.write_text("0.5, 1e-3\n0.4, 1e-2\n")
    bad = runner.invoke(app, ["memory", "curve", "--curve", str(table)])
    assert bad.exit_code == 2 and "strictly increasing" in bad.output


def test_sweep_and_train_commands(lenet5_trained: nn.Module, tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(lenet5_trained.state_dict(), weights)
    res = runner.invoke(app, ["memory", "sweep", "--weights", str(weights), "--out", str(tmp_path / "run"),
                              "--voltages", "1.0,0.45", "--mode", "flip", "--chips", "1", "--test-limit", "200",
                              "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["chips"] == 1 and m["test_samples"] == 200 and m["fault_mode"] == "flip"
    assert (tmp_path / "run" / "report.html").is_file()
    out = tmp_path / "adapted.pt"
    res = runner.invoke(app, ["memory", "train", "--weights", str(weights), "--out", str(out), "--voltage", "0.45",
                              "--mode", "flip", "--train-limit", "1000", "--test-limit", "300", "--lr", "0.001",
                              "--json"])
    assert res.exit_code == 0, res.output
    t = json.loads(res.stdout)
    assert t["faulty_bits"] > 0 and t["test_accuracy_after"] >= t["test_accuracy_before"]
    state = torch.load(out, weights_only=True)
    assert set(state) == set(lenet5_trained.state_dict())
    bad = runner.invoke(app, ["memory", "train", "--weights", str(weights), "--out", str(out), "--voltage", "nan"])
    assert bad.exit_code == 2 and "not a voltage" in bad.output
    bad = runner.invoke(app, ["memory", "train", "--out", str(out), "--voltage", "0.5"])
    assert bad.exit_code == 2 and "give a RUN_DIR or --weights" in bad.output

"""``crosslayer approx``: list, load, eval, select, and the one-red-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from typer.testing import CliRunner

from crosslayer.approx import get_multiplier, save_table
from crosslayer.cli.main import app

runner = CliRunner()


def test_list_json_has_metrics(tmp_path: Path) -> None:
    res = runner.invoke(app, ["approx", "list", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["multipliers"]
    assert len(rows) >= 8 and rows[0]["name"] == "exact" and rows[0]["med"] == 0
    assert all({"med", "mred", "wce", "error_rate", "bias", "relative_power"} <= set(r) for r in rows)
    assert (tmp_path / "multipliers.json").is_file()


def test_load_table_and_errors(tmp_path: Path) -> None:
    path = save_table(tmp_path / "m.csv", get_multiplier("drum5"))
    res = runner.invoke(app, ["approx", "load", str(path), "--power", "0.7", "--json", "--save",
                              str(tmp_path / "m.npy")])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["relative_power"] == 0.7 and row["med"] > 0
    assert np.array_equal(np.load(tmp_path / "m.npy"), get_multiplier("drum5").table)
    np.save(tmp_path / "bad.npy", np.zeros((16, 16)))
    bad = runner.invoke(app, ["approx", "load", str(tmp_path / "bad.npy")])
    assert bad.exit_code == 2 and "256x256" in bad.output
    unknown = runner.invoke(app, ["approx", "list", "--names", "exact,nope"])
    assert unknown.exit_code == 2 and "unknown multiplier 'nope'" in unknown.output


def test_eval_and_select_on_weights(tmp_path: Path, lenet5_trained: nn.Module, data_dir: Path) -> None:
    w = tmp_path / "w.pt"
    torch.save(lenet5_trained.state_dict(), w)
    common = ["--weights", str(w), "--test-limit", "200", "--data-dir", str(data_dir), "--json"]
    res = runner.invoke(app, ["approx", "eval", "--assign", "fc1=trunc6,conv1=drum4", *common])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["assignment"]["fc1"]["name"] == "trunc6" and out["assignment"]["conv2"]["name"] == "exact"
    assert 0.8 < out["test_accuracy"] <= 1 and out["test_samples"] == 200
    sel = runner.invoke(app, ["approx", "select", "--names", "exact,trunc6", "--budget", "1.0",
                              "--select-limit", "200", "--out", str(tmp_path), *common])
    assert sel.exit_code == 0, sel.output
    got = json.loads(sel.stdout)
    assert set(got["assignment"]) == {"conv1", "conv2", "fc1", "fc2"} and 0 <= got["power_saving"] < 1
    assert got["selection_accuracy_loss_pp"] <= 1.0 + 1e-9
    assert (tmp_path / "approx_select.json").is_file()
    none = runner.invoke(app, ["approx", "eval", *common])
    assert none.exit_code == 2 and "--multiplier" in none.output

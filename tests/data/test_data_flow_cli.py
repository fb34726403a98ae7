"""A dataset given as a path reaches the flow and the CLI: colour .npz images through a flow TOML (with resize
and input normalisation) and an image folder through `crosslayer train`, each training a user or built-in model."""

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.errors import ConfigError
from crosslayer.flow import load_flow_config, run_flow
from user_models import USER_MODELS_FILE

runner = CliRunner()


def _npz(path, n_train=64, n_test=32, size=12, seed=0):
    rng = np.random.default_rng(seed)
    y_tr, y_te = rng.integers(0, 3, n_train), rng.integers(0, 3, n_test)

    def images(y):  # class c brightens channel c: learnable in a step or two
        x = rng.integers(0, 90, size=(len(y), size, size, 3)).astype(np.uint8)
        x[np.arange(len(y)), :, :, y] += 150
        return x
    np.savez_compressed(path, x_train=images(y_tr), y_train=y_tr, x_test=images(y_te), y_test=y_te,
                        classes=np.array(["r", "g", "b"]))
    return path


def test_flow_on_npz_path_with_resize_and_normalisation(tmp_path):
    data = _npz(tmp_path / "rgb.npz")
    cfg = tmp_path / "flow.toml"
    cfg.write_text(f'[flow]\nmodel = "resnet20"\ndataset = "{data}"\nresize = 16\nval_fraction = 0.25\n'
                   'stages = ["baseline", "evaluate"]\n[baseline]\nepochs = 2\nbatch_size = 16\nlr = 0.05\n'
                   'use_cache = false\n')
    reports = run_flow(load_flow_config(cfg), tmp_path / "run")
    base = reports[0].metrics
    assert base["train_samples"] == 48 and base["test_samples"] == 32
    assert base["test_accuracy"] > 0.6  # chance is 1/3
    state = torch.load(tmp_path / "run" / "checkpoints" / "baseline.pt", weights_only=True)
    x = np.load(data)["x_train"].astype(np.float64) / 255.0
    assert state["normalize.mean"].flatten().tolist() == pytest.approx(x.mean(axis=(0, 1, 2)), abs=0.03)
    written = (tmp_path / "run" / "config.toml").read_text()
    assert "resize = 16" in written and str(data) in written


def test_flow_config_checks_resize_and_channels():
    with pytest.raises(ConfigError, match="flow.channels"):
        load_flow_config(None, {"channels": 2})
    with pytest.raises(ConfigError, match="flow.resize"):
        load_flow_config(None, {"resize": -1})


def test_train_cli_on_image_folder_with_a_user_model(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("test", 4)):
        for c, level in (("dark", 30), ("light", 220)):
            for i in range(n):
                img = np.clip(rng.normal(level, 20, size=(10, 10)), 0, 255).astype(np.uint8)
                p = tmp_path / "imgs" / split / c / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(p), img)
    res = runner.invoke(app, ["train", "--model", f"{USER_MODELS_FILE}:functional_cnn", "--dataset",
                              str(tmp_path / "imgs"), "--out", str(tmp_path / "run"), "--epochs", "3", "--lr", "0.05",
                              "--batch-size", "8", "--no-cache", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["baseline"]
    assert metrics["test_samples"] == 8 and metrics["params"] > 0
    bad = runner.invoke(app, ["train", "--dataset", str(tmp_path / "nowhere.npz"), "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "nowhere.npz' does not exist" in bad.output

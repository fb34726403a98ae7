import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.errors import ConfigError
from crosslayer.flow import load_flow_config, run_flow
from crosslayer.security.stage import SecurityConfig


def test_security_stage_in_flow(tmp_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text(f"""[flow]
data_dir = "{data_dir}"
stages = ["baseline", "security"]
train_limit = 2000
test_limit = 500
[baseline]
epochs = 1
[security]
images = 30
steps = 2
eps = [0.0, 0.1, 0.3]
defences = ["quantize"]
defence_images = 20
table_attacks = ["fgsm", "jsma"]
table_images = 2
""")
    reports = run_flow(load_flow_config(cfg), tmp_path / "run")
    rep = reports[-1]
    m = rep.metrics
    assert rep.stage == "security" and 0.5 < m["test_accuracy"] <= 1
    assert m["robust_accuracy_baseline_eps0"] >= m["robust_accuracy_baseline_eps0.3"]
    assert "defence_quantize_adaptive_robust_accuracy" in m and "attack_jsma_success_rate" in m
    assert len(rep.figures) == 1 and rep.figures[0].png.startswith(b"\x89PNG")
    assert any("pruned" in n for n in rep.notes)  # missing flow models are named
    assert any("BadNets demo skipped" in n for n in rep.notes)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["security"]["test_accuracy"] > 0.5


def test_security_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"eps\[1\]"):
        SecurityConfig(eps=(0.1, -0.2)).validate()
    with pytest.raises(ConfigError, match="defences: unknown 'blur'"):
        SecurityConfig(defences=("blur",)).validate()
    with pytest.raises(ConfigError, match="table_attacks: unknown 'deepfool'"):
        SecurityConfig(table_attacks=("deepfool",)).validate()


def test_cli_attack_and_errors(tmp_path: Path, lenet5_trained, data_dir: Path) -> None:
    w = tmp_path / "w.pt"
    torch.save(lenet5_trained.state_dict(), w)
    runner = CliRunner()
    res = runner.invoke(app, ["attack", "--weights", str(w), "--attack", "pgd", "--eps", "0.2", "--steps", "5",
                              "--images", "20", "--json", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "attack-pgd.json").read_text())
    assert m["n"] == 20 and 0 < m["success_rate"] <= 1 and m["mean_linf"] <= 0.2 + 1e-6
    bad = runner.invoke(app, ["attack", "--weights", str(w), "--eps", "-0.1"])
    assert bad.exit_code == 2 and "eps = -0.1" in bad.output
    bad = runner.invoke(app, ["attack", "--weights", str(w), "--attack", "deepfool"])
    assert bad.exit_code == 2 and "unknown attack" in bad.output
    bad = runner.invoke(app, ["attack", "--weights", str(w), "--norm", "l1"])
    assert bad.exit_code == 2 and "norm" in bad.output
    bad = runner.invoke(app, ["defend", "--weights", str(w), "--defence", "blur", "--images", "5"])
    assert bad.exit_code == 2 and "unknown defence" in bad.output
    res = runner.invoke(app, ["defend", "--weights", str(w), "--defence", "median", "--images", "16", "--steps", "3",
                              "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    # the adaptive (BPDA) attacker should do at least as well as the oblivious one; with 3 steps on 16 images
    # the straight-through gradient can miss a single image, so one image of slack (1/16)
    assert 0.0 <= d["nonadaptive_robust_accuracy"] <= 1.0
    assert d["adaptive_robust_accuracy"] <= d["nonadaptive_robust_accuracy"] + 1 / 16 + 1e-9

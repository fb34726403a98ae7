from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.errors import ConfigError
from crosslayer.flow import load_flow_config, run_flow

FLOW = """
[flow]
stages = ["baseline", "detect"]
train_limit = 2000
test_limit = 500

[baseline]
epochs = 1

[detect]
frames = 4
width = 768
height = 432
num_objects = 4
tile = 192
min_overlap = 48
train_crops = 64
train_epochs = 1
"""


def test_detect_stage_in_a_flow(tmp_path: Path, data_dir: Path) -> None:
    toml = tmp_path / "flow.toml"
    toml.write_text(FLOW)
    reports = run_flow(load_flow_config(toml), tmp_path / "run")
    rep = reports[-1]
    assert rep.stage == "detect"
    m = rep.metrics
    for mode in ("resize", "tiles", "stp"):
        for key in ("recall", "precision", "ap50", "fps", "tiles_per_frame", "relative_energy"):
            assert f"{mode}_{key}" in m
    assert m["tiles_total"] == 15  # 768x432 with 192 px tiles, >= 48 px overlap: 5 x 3
    assert m["tiles_tiles_per_frame"] == 15 and m["resize_tiles_per_frame"] == 1
    assert m["stp_tiles_per_frame"] == pytest.approx((15 + 3 * 4) / 4)  # first frame all, then ceil(0.25 * 15)
    assert m["tiles_relative_energy"] == pytest.approx(1.0)
    assert len(rep.figures) == 2 and rep.tables
    assert any("hw_energy_per_mac" in n for n in rep.notes)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "detect" in metrics


def test_stage_config_validation() -> None:
    from crosslayer.detect.stage import DetectStageConfig

    with pytest.raises(ConfigError, match="budget"):
        DetectStageConfig(budget=0).validate()
    with pytest.raises(ConfigError, match="min_overlap"):
        DetectStageConfig(min_overlap=0).validate()
    with pytest.raises(ConfigError, match="tile"):
        DetectStageConfig(tile=2000).validate()


def test_cli_detect_on_synthetic_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    helper = Path(__file__).with_name("detect_helpers.py")
    f = tmp_path / "mydet.py"
    f.write_text(f"import sys\nsys.path.insert(0, {str(helper.parent)!r})\nfrom detect_helpers import BlobDetector\n"
                 "def make():\n    return BlobDetector(size=384, min_side=200)\n")
    res = runner.invoke(app, ["detect", "synthetic", "--mode", "stp", "--detector", f"{f}:make", "--max-frames", "3",
                              "--out", str(tmp_path / "o"), "--json", "--video-out", str(tmp_path / "o" / "a.avi")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["frames"] == 3 and m["tiles_total"] == 24 and "recall" in m
    det = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert len(det["frames"]) == 3 and len(det["frames"][0]["tiles"]) == 24
    assert (tmp_path / "o" / "a.avi").stat().st_size > 0
    bad = runner.invoke(app, ["detect", str(tmp_path / "missing.avi"), "--out", str(tmp_path / "p"),
                              "--detector", f"{f}:make"])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    bad = runner.invoke(app, ["detect", "synthetic", "--overlap", "0", "--out", str(tmp_path / "p")])
    assert bad.exit_code == 2 and "min_overlap" in bad.output
    bad = runner.invoke(app, ["detect", "synthetic", "--mode", "fast", "--out", str(tmp_path / "p")])
    assert bad.exit_code == 2 and "mode" in bad.output

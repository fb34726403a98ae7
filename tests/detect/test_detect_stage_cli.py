from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.errors import ConfigError
from crosslayer.flow import load_flow_config, run_flow

HELPERS = Path(__file__).with_name("detect_helpers.py")
FLOW = """
[flow]
stages = ["baseline", "detect"]
train_limit = 2000
test_limit = 500

[baseline]
epochs = 1

[detect]
frames = 4
val_sequences = 1
val_frames = 3
width = 768
height = 432
num_objects = 4
min_size = 12
max_size = 48
tile = 192
min_overlap = 48
train_crops = 64
train_epochs = 1
"""


def _user_detector(tmp_path: Path, body: str = "return BlobDetector(size=384, min_side=200)") -> str:
    f = tmp_path / "mydet.py"
    f.write_text(f"import sys, time\nsys.path.insert(0, {str(HELPERS.parent)!r})\nfrom detect_helpers import "
                 f"BlobDetector\ndef make():\n    {body}\n")
    return f"{f}:make"


def test_detect_stage_in_a_flow(tmp_path: Path, data_dir: Path) -> None:
    toml = tmp_path / "flow.toml"
    toml.write_text(FLOW)
    reports = run_flow(load_flow_config(toml), tmp_path / "run")
    rep = reports[-1]
    assert rep.stage == "detect"
    m = rep.metrics
    for mode in ("resize", "full_frame", "tiles", "stp"):
        for key in ("recall", "precision", "ap50", "fps", "tiles_per_frame", "macs_per_frame", "score_threshold"):
            assert f"{mode}_{key}" in m
    assert m["tiles_total"] == 15  # 768x432 with 192 px tiles, >= 48 px overlap: 5 x 3
    assert m["tiles_tiles_per_frame"] == 15 and m["resize_tiles_per_frame"] == 1
    assert m["stp_tiles_per_frame"] == pytest.approx((15 + 3 * 4) / 4)  # first frame all, then ceil(0.25 * 15)
    # MACs: the whole 768x432 frame is 9 tiles' area, so STP's 6.75 tiles cost 75 % of it
    assert m["full_frame_macs_per_frame"] == pytest.approx(9 * m["tiles_macs_per_frame"] / 15, rel=0.01)
    assert m["stp_macs_vs_full_frame"] == pytest.approx(6.75 / 9, rel=0.01)
    assert m["stp_max_misses"] in (0, 1, 2, 3) and 0 < m["stp_score_threshold"] < 1
    assert len(rep.figures) == 2 and rep.tables
    assert any("hw_energy_per_mac" in n for n in rep.notes)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "detect" in metrics


def test_stage_config_validation() -> None:
    from crosslayer.detect.stage import DetectStageConfig

    with pytest.raises(ConfigError, match="budget"):
        DetectStageConfig(budget=0).validate()
    with pytest.raises(ConfigError, match="budget"):
        DetectStageConfig(budget=float("inf")).validate()
    with pytest.raises(ConfigError, match="min_overlap"):
        DetectStageConfig(min_overlap=-1).validate()
    with pytest.raises(ConfigError, match="tile"):
        DetectStageConfig(tile=2000).validate()
    with pytest.raises(ConfigError, match="width"):
        DetectStageConfig(width=10**6).validate()
    with pytest.raises(ConfigError, match="crops"):
        DetectStageConfig(train_crops=10**9).validate()
    assert DetectStageConfig().overlap() == 128 and DetectStageConfig(min_overlap=64).overlap() == 64


def test_cli_detect_on_synthetic_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    spec = _user_detector(tmp_path)
    res = runner.invoke(app, ["detect", "synthetic", "--mode", "stp", "--detector", spec, "--max-frames", "3",
                              "--out", str(tmp_path / "o"), "--json", "--video-out", str(tmp_path / "o" / "a.avi")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["frames"] == 3 and m["tiles_total"] == 28 and "recall" in m and m["macs_per_frame"] > 0
    json.loads((tmp_path / "o" / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))  # strict
    det = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert len(det["frames"]) == 3 and len(det["frames"][0]["tiles"]) == 28
    assert (tmp_path / "o" / "a.avi").stat().st_size > 0
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]
    res = runner.invoke(app, ["detect", "synthetic", "--mode", "full_frame", "--detector",
                              _user_detector(tmp_path, "return BlobDetector(size=384, min_side=2000)"),
                              "--max-frames", "2", "--out", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert m["precision"] is None and m["recall"] == 0.0  # no detections: precision undefined, written as null
    bad = runner.invoke(app, ["detect", str(tmp_path / "missing.avi"), "--out", str(tmp_path / "p"),
                              "--detector", spec])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    bad = runner.invoke(app, ["detect", "synthetic", "--overlap", "-1", "--out", str(tmp_path / "p")])
    assert bad.exit_code == 2 and "--overlap" in bad.output
    bad = runner.invoke(app, ["detect", "synthetic", "--mode", "fast", "--out", str(tmp_path / "p")])
    assert bad.exit_code == 2 and "mode" in bad.output


@pytest.mark.parametrize(("args", "message"), [
    (["--tile", "100000"], "--tile = 100000 is out of range"),   # allocated 14 GB before it was bounded
    (["--tile", "2000"], "larger than the 1920x1080 frame"),
    (["--tile", "-384"], "--tile"),
    (["--budget", "inf"], "--budget inf"),
    (["--budget", "nan"], "--budget nan"),
    (["--conf", "nan"], "--conf nan"),
    (["--conf", "1.5"], "--conf"),
])
def test_cli_bounds_every_number_before_allocating(tmp_path: Path, args: list[str], message: str) -> None:
    spec = _user_detector(tmp_path, "raise AssertionError('the detector was built before the checks')")
    res = CliRunner().invoke(app, ["detect", "synthetic", "--detector", spec, "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_cli_user_detector_failures_are_one_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["detect", "synthetic", "--detector", _user_detector(tmp_path, "raise OSError('gone')"),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "raised OSError: gone" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["detect", "synthetic", "--mode", "full_frame", "--out", str(tmp_path / "o"),
                              "--detector", _user_detector(tmp_path, "from detect_helpers import FixedInputDetector"
                                                                     "\n    return FixedInputDetector(size=384)")])
    assert res.exit_code == 2 and "fixed input size" in res.output


def test_cli_truncated_video_keeps_the_frames_read_and_fails(tmp_path: Path) -> None:
    full = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter.fourcc(*"MJPG"), 10, (384, 384))
    rng = np.random.default_rng(0)
    for _ in range(30):
        w.write(rng.integers(0, 255, (384, 384, 3), np.uint8))
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    res = CliRunner().invoke(app, ["detect", str(cut), "--mode", "tiles", "--tile", "384", "--overlap", "64",
                                   "--detector", _user_detector(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "stops after" in res.output and "Traceback" not in res.output
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert 0 < m["frames"] < 30 and m["interrupted"] and "stops after" in m["error"]


def test_sigterm_stops_detect_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "o"
    spec = _user_detector(tmp_path, "d = BlobDetector(size=384, min_side=200)\n    d.macs_at = None\n"
                                    "    orig = d.detect\n    d.detect = lambda t: (time.sleep(0.2), orig(t))[1]\n"
                                    "    return d")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CROSSLAYER_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "crosslayer.cli.main", "detect", "synthetic", "--mode", "tiles",
                             "--detector", spec, "--max-frames", "200", "--out", str(out), "--video-out",
                             str(out / "a.avi")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(p.name.endswith(".partial.avi") for p in
                                                      (out.iterdir() if out.is_dir() else [])):
            time.sleep(0.2)
        time.sleep(1.0)  # a few frames into the video
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output.decode()
    m = json.loads((out / "metrics.json").read_text())
    assert m["interrupted"] and 0 < m["frames"] < 200
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary video left
    assert (out / "a.avi").is_file()

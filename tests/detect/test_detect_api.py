"""The ``detect_video`` verb with a user detector (an exact blob detector through the protocol): every mode on
frames with ground truth, frames without, an annotated video out, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from detect_helpers import BlobDetector, square_frames

import crosslayer as xl
from crosslayer.detect.api import VideoSource
from crosslayer.errors import ConfigError


def _source(n: int = 6) -> VideoSource:
    return VideoSource(square_frames(n, objects=4, side=16, seed=1), (640, 360), total=n)


def test_modes_with_ground_truth() -> None:
    tiles = xl.detect_video(BlobDetector(size=128), xl.DetectConfig(mode="tiles", tile=128, min_overlap=32),
                            _source())
    m = tiles.metrics()
    assert m["frames"] == 6 and m["tiles_per_frame"] == m["tiles_total"] > 1 and m["recall"] == 1.0
    assert m["class_agnostic"] is True and m["precision"] == 1.0 and not m["interrupted"]
    stp = xl.detect_video(BlobDetector(size=128), xl.DetectConfig(mode="stp", tile=128, min_overlap=32,
                                                                   budget=0.25), _source())
    assert stp.run.n_tiles == tiles.run.n_tiles and stp.metrics()["tiles_per_frame"] < m["tiles_per_frame"]
    assert stp.recall is not None and stp.recall > 0.5 and stp.metrics()["macs_per_frame"] < m["macs_per_frame"]
    full = xl.detect_video(BlobDetector(size=128), xl.DetectConfig(mode="full_frame", tile=128), _source(3))
    assert full.metrics()["tiles_per_frame"] == 1 and full.recall == 1.0
    det = tiles.detections_json()
    assert len(det["frames"]) == 6 and len(det["frames"][0]["detections"]) == 4


def test_frames_without_truth_and_a_video_out(tmp_path: Path) -> None:
    frames = [f for f, _ in square_frames(4, seed=2)]
    res = xl.detect_video(BlobDetector(size=128), xl.DetectConfig(mode="tiles", tile=128, max_frames=3), frames,
                          video_out=tmp_path / "a.avi")
    assert len(res.run.frames) == 3 and "recall" not in res.metrics() and res.recall is None
    assert (tmp_path / "a.avi").stat().st_size > 0


def test_errors() -> None:
    with pytest.raises(ConfigError, match="mode 'fast'"):
        xl.DetectConfig(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_overlap"):
        xl.DetectConfig(tile=64, min_overlap=64)
    with pytest.raises(ConfigError, match="larger than the 640x360 frame"):
        xl.detect_video(BlobDetector(size=128), xl.DetectConfig(mode="tiles", tile=400), _source(2))
    with pytest.raises(ConfigError, match="at least one frame"):
        xl.detect_video(BlobDetector(size=128), xl.DetectConfig(), [])

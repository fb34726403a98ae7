from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from crosslayer.data.scenes import (
    TEST_BACKGROUNDS,
    TRAIN_BACKGROUNDS,
    VAL_BACKGROUNDS,
    SceneConfig,
    _visible_fractions,
    draw_sizes,
    render_sequence,
    training_crops,
)
from crosslayer.data.video import (
    MAX_FRAME_SIDE,
    TruncatedVideoError,
    VideoReader,
    VideoWriter,
    read_frames,
    remove_stale_partials,
)
from crosslayer.errors import ConfigError, DataError

VTEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "vtest.avi"


def _write_avi(path: Path, n: int, size: tuple[int, int] = (160, 120)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, size)
    rng = np.random.default_rng(0)
    for _ in range(n):
        w.write(rng.integers(0, 255, (size[1], size[0], 3), np.uint8))
    w.release()
    return path


def test_scenes_are_seeded_high_res_with_exact_boxes() -> None:
    cfg = SceneConfig(num_frames=3, num_objects=6)
    a = list(render_sequence(cfg, seed=5))
    b = list(render_sequence(cfg, seed=5))
    c = list(render_sequence(cfg, seed=6))
    assert a[0].image.shape == (1080, 1920, 3) and a[0].image.dtype == np.uint8
    assert np.array_equal(a[2].image, b[2].image) and np.array_equal(a[2].boxes, b[2].boxes)
    assert not np.array_equal(a[0].boxes, c[0].boxes)
    f = a[0]
    assert 1 <= len(f.boxes) <= 6 and set(f.classes.tolist()) <= {0, 1, 2}
    sizes = f.boxes[:, 2:] - f.boxes[:, :2]
    assert (sizes >= 8).all() and (sizes <= 129).all()
    # the box is tight: the sprite differs from the background inside it, and not outside
    from crosslayer.data.scenes import background

    bg = background(TEST_BACKGROUNDS[5 % len(TEST_BACKGROUNDS)], 1920, 1080)
    x1, y1, x2, y2 = f.boxes[0].astype(int)
    inside = np.abs(f.image[y1:y2, x1:x2].astype(int) - bg[y1:y2, x1:x2]).mean()
    ring = np.abs(f.image[y1 - 6:y1 - 3, x1:x2].astype(int) - bg[y1 - 6:y1 - 3, x1:x2]).mean()
    assert inside > 20 > ring


def test_object_sizes_spread_log_uniformly_and_hidden_objects_leave_the_ground_truth() -> None:
    s = draw_sizes(np.random.default_rng(0), 20_000, 12, 128)
    assert s.min() == 12 and s.max() == 128
    # log-uniform on [12, 128]: ln(32/12) / ln(129/12) = 41 % below 32 px, 12 % above 96 px
    assert np.mean(s < 32) == pytest.approx(0.41, abs=0.02) and np.mean(s > 96) == pytest.approx(0.12, abs=0.02)
    u = draw_sizes(np.random.default_rng(0), 20_000, 12, 128, "uniform")
    assert np.mean(u < 32) == pytest.approx(20 / 117, abs=0.02)
    big = np.ones((10, 10), bool)
    small = np.ones((4, 4), bool)
    # drawn in order big, small (on top), then a third far away: small hides 16 % of big
    assert _visible_fractions([big, small, small], [(0, 0), (2, 2), (50, 50)]) == pytest.approx([0.84, 1.0, 1.0])
    assert _visible_fractions([small, big], [(2, 2), (0, 0)])[0] == 0.0
    with pytest.raises(ConfigError, match="size_distribution"):
        SceneConfig(size_distribution="normal").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="width"):
        SceneConfig(width=100_000).validate()
    with pytest.raises(ConfigError, match="num_objects"):
        SceneConfig(num_objects=10**9).validate()


def test_train_val_test_backgrounds_are_disjoint_and_crops_match_their_scale() -> None:
    assert not set(TRAIN_BACKGROUNDS) & set(TEST_BACKGROUNDS)
    assert not set(VAL_BACKGROUNDS) & (set(TRAIN_BACKGROUNDS) | set(TEST_BACKGROUNDS))
    imgs, targets = training_crops(12, 96, seed=1, max_size=40)
    assert imgs.shape == (12, 96, 96, 3)
    for boxes, cls in targets:
        assert len(boxes) == len(cls)
        assert (boxes >= 0).all() and (boxes <= 96).all()
    # a crop for a detector fed frames scaled by 0.2: 640 frame px downscaled to 128, objects 12-128 -> 2.4-25.6 px
    small, tg = training_crops(40, 128, seed=2, scale=0.2, max_objects=6)
    sides = np.concatenate([b[:, 2:] - b[:, :2] for b, _ in tg])
    assert small.shape == (40, 128, 128, 3) and len(sides) > 20
    assert sides.max() <= 128 * 0.2 + 1 and sides.min() >= 1
    with pytest.raises(ConfigError, match="frame region"):
        training_crops(2, 128, seed=0, scale=0.1)  # 1280 px of a 1080 px frame
    with pytest.raises(ConfigError, match="max_size"):
        SceneConfig(width=128, height=128).validate()


def test_video_reader_reads_and_fails_clearly(tmp_path: Path) -> None:
    if not VTEST.is_file():
        pytest.skip("vtest.avi not in the offline data")
    with VideoReader(VTEST, max_frames=3) as r:
        frames = list(r)
        assert (r.width, r.height) == (768, 576) and r.frame_count == 3
    assert len(frames) == 3 and frames[0].shape == (576, 768, 3)
    with pytest.raises(DataError, match="does not exist"):
        VideoReader(tmp_path / "missing.avi")
    with pytest.raises(DataError, match="not a regular file"):
        VideoReader(tmp_path)
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="cannot be opened|no readable frames"):
        read_frames(junk)
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(DataError, match="cannot be opened|no readable frames"):
        read_frames(tmp_path / "empty.avi")
    with pytest.raises(ConfigError, match="max_frames"):
        VideoReader(VTEST, max_frames=-1)


def test_truncated_video_raises_after_the_frames_it_could_read(tmp_path: Path) -> None:
    full = _write_avi(tmp_path / "full.avi", 30)
    assert len(read_frames(full)) == 30
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    got = []
    with pytest.raises(TruncatedVideoError, match="stops after") as exc, VideoReader(cut) as r:
        got.extend(r)
    assert 0 < exc.value.frames_read == len(got) < 30
    assert len(read_frames(cut, max_frames=5)) == 5  # the frames before the cut are fine


def test_oversized_frames_are_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide = _write_avi(tmp_path / "wide.avi", 1, (MAX_FRAME_SIDE + 8, 16))
    with pytest.raises(DataError, match="at most 8192 px"):
        VideoReader(wide)

    class HostileCapture:  # declares 60,000 x 60,000 frames; decoding one would allocate 10 GB
        def __init__(self, path: str) -> None:
            pass

        def isOpened(self) -> bool:
            return True

        def get(self, prop: int) -> float:
            return 60_000.0 if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT) else 1.0

        def read(self) -> tuple[bool, None]:
            raise AssertionError("decoded a frame before checking its declared size")

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", HostileCapture)
    with pytest.raises(DataError, match="60000x60000"):
        VideoReader(wide)


def test_refusing_a_large_video_keeps_memory_small(tmp_path: Path) -> None:
    # 7,700 x 4,400 (34 Mpx, 102 MB per frame, over the 8K limit): refused before a frame is decoded
    big = tmp_path / "big.avi"
    w = cv2.VideoWriter(str(big), cv2.VideoWriter.fourcc(*"MJPG"), 10, (7700, 4400))
    w.write(np.zeros((4400, 7700, 3), np.uint8))
    w.release()
    code = ("import resource, sys\nfrom crosslayer.data.video import VideoReader\nfrom crosslayer.errors import "
            "DataError\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\ntry:\n    VideoReader(sys.argv[1])"
            "\nexcept DataError as e:\n    print(e)\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    before, message, after = res.stdout.strip().splitlines()[-3:]
    assert "7700x4400" in message and "Mpx" in message
    # peak memory added by opening it: far below one decoded frame (102 MB), let alone the decoder's buffers
    assert (int(after) - int(before)) / 1024 < 30


def test_video_writer_round_trip_and_cleanup(tmp_path: Path) -> None:
    out = tmp_path / "o.avi"
    with VideoWriter(out, 10, (160, 120)) as w:
        for i in range(4):
            w.write(np.full((120, 160, 3), 40 * i, np.uint8))
    frames = read_frames(out)
    assert len(frames) == 4 and abs(int(frames[3].mean()) - 120) < 6
    assert [p.name for p in tmp_path.iterdir()] == ["o.avi"]  # no temporary file left
    with pytest.raises(ConfigError, match=".avi or .mp4"):
        VideoWriter(tmp_path / "o.gif", 10, (160, 120))
    with pytest.raises(DataError, match="at most"):
        VideoWriter(tmp_path / "o.avi", 10, (100_000, 120))
    with pytest.raises(ConfigError, match="fps"):
        VideoWriter(tmp_path / "o.avi", float("nan"), (160, 120))


def test_a_killed_writers_temporary_video_is_removed_by_the_next(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process id that no longer runs
    stale = tmp_path / f".a.{dead}-0123abcd.partial.avi"
    stale.write_bytes(b"half a video")
    alive = tmp_path / f".b.{os.getppid()}-0123abcd.partial.avi"  # a running process's: left alone
    alive.write_bytes(b"in progress")
    other = tmp_path / ".notes.txt"
    other.write_text("x")
    assert remove_stale_partials(tmp_path) == [stale]
    assert not stale.exists() and alive.exists() and other.exists()
    stale.write_bytes(b"half a video")
    with VideoWriter(tmp_path / "c.avi", 10, (64, 48)) as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
    assert not stale.exists() and (tmp_path / "c.avi").is_file()

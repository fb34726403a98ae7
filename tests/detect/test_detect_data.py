from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crosslayer.data.scenes import TEST_BACKGROUNDS, TRAIN_BACKGROUNDS, SceneConfig, render_sequence, training_crops
from crosslayer.data.video import VideoReader, VideoWriter, read_frames
from crosslayer.errors import ConfigError, DataError

VTEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "vtest.avi"


def test_scenes_are_seeded_high_res_with_exact_boxes() -> None:
    cfg = SceneConfig(num_frames=3, num_objects=6)
    a = list(render_sequence(cfg, seed=5))
    b = list(render_sequence(cfg, seed=5))
    c = list(render_sequence(cfg, seed=6))
    assert a[0].image.shape == (1080, 1920, 3) and a[0].image.dtype == np.uint8
    assert np.array_equal(a[2].image, b[2].image) and np.array_equal(a[2].boxes, b[2].boxes)
    assert not np.array_equal(a[0].boxes, c[0].boxes)
    f = a[0]
    assert len(f.boxes) == 6 and set(f.classes.tolist()) <= {0, 1, 2}
    sizes = f.boxes[:, 2:] - f.boxes[:, :2]
    assert (sizes >= 12).all() and (sizes <= 45).all()
    # the box is tight: the sprite differs from the background inside it, and not outside
    from crosslayer.data.scenes import background

    bg = background(TEST_BACKGROUNDS[5 % len(TEST_BACKGROUNDS)], 1920, 1080)
    x1, y1, x2, y2 = f.boxes[0].astype(int)
    inside = np.abs(f.image[y1:y2, x1:x2].astype(int) - bg[y1:y2, x1:x2]).mean()
    ring = np.abs(f.image[y1 - 6:y1 - 3, x1:x2].astype(int) - bg[y1 - 6:y1 - 3, x1:x2]).mean()
    assert inside > 20 > ring


def test_train_and_test_backgrounds_are_disjoint() -> None:
    assert not set(TRAIN_BACKGROUNDS) & set(TEST_BACKGROUNDS)
    imgs, targets = training_crops(12, 96, seed=1)
    assert imgs.shape == (12, 96, 96, 3)
    for boxes, cls in targets:
        assert len(boxes) == len(cls)
        assert (boxes >= 0).all() and (boxes <= 96).all()
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
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="cannot be opened|no readable frames"):
        read_frames(junk)
    with pytest.raises(ConfigError, match="max_frames"):
        VideoReader(VTEST, max_frames=-1)


def test_video_writer_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "o.avi"
    with VideoWriter(out, 10, (160, 120)) as w:
        for i in range(4):
            w.write(np.full((120, 160, 3), 40 * i, np.uint8))
    frames = read_frames(out)
    assert len(frames) == 4 and abs(int(frames[3].mean()) - 120) < 6
    with pytest.raises(ConfigError, match=".avi or .mp4"):
        VideoWriter(tmp_path / "o.gif", 10, (160, 120))

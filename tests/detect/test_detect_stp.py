from __future__ import annotations

import numpy as np
import pytest
from detect_helpers import BlobDetector, square_frames

from crosslayer.detect.attention import AttentionWeights, TileAttention, budget_tiles
from crosslayer.detect.compare import compare_modes
from crosslayer.detect.detections import Detections
from crosslayer.detect.memory import TileMemory, UpdateStats
from crosslayer.detect.pipeline import FrameProcessor, STPConfig, process_video
from crosslayer.detect.tiling import core_regions, tile_grid
from crosslayer.errors import ConfigError


def _det(*boxes: list[float]) -> Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(b, np.full(len(b), 0.9, np.float32), np.zeros(len(b), np.int64))


def test_memory_counts_new_and_seen_and_carries_with_velocity() -> None:
    tiles = tile_grid(640, 360, 128, 128, 16)
    cores = core_regions(tiles, 640, 360)
    mem = TileMemory(cores, match_iou=0.3)
    s0 = mem.update(0, np.arange(len(tiles)), _det([10, 10, 26, 26], [300, 200, 316, 216]))
    assert sum(s0.new.values()) == 2 and len(mem) == 2
    s1 = mem.update(1, np.arange(len(tiles)), _det([12, 10, 28, 26], [300, 200, 316, 216], [500, 50, 516, 66]))
    assert sum(s1.new.values()) == 1 and sum(s1.objects.values()) == 3
    # tile of the first object not processed at frame 3: carried forward at velocity 2 px/frame * 0.5 smoothing
    owner = int(mem.owners(1)[0])
    carried = mem.carried(3, np.array([t for t in range(len(tiles)) if t != owner]))
    assert len(carried) == 1
    assert carried.boxes[0, 0] == pytest.approx(12 + 2 * 1.0)
    # processing that tile and finding nothing: one miss is tolerated (detector flicker), two forget it
    mem.update(4, np.array([owner]), Detections.empty())
    assert len(mem) == 3
    mem.update(5, np.array([owner]), Detections.empty())
    assert len(mem) == 2
    strict = TileMemory(cores, max_misses=0)
    strict.update(0, np.arange(len(tiles)), _det([10, 10, 26, 26]))
    strict.update(1, np.arange(len(tiles)), Detections.empty())
    assert len(strict) == 0


def test_attention_score_formula_and_budget() -> None:
    tiles = tile_grid(640, 360, 128, 128, 16)
    cores = core_regions(tiles, 640, 360)
    w = AttentionWeights(objects=1.0, new=2.0, age=0.25, motion=0.0)
    att = TileAttention(cores, k=3, weights=w, use_motion=False)
    frame = np.zeros((360, 640, 3), np.uint8)
    assert len(att.select(frame, np.zeros(len(tiles), np.int64))) == len(tiles)  # first frame: all tiles
    att.update(np.arange(len(tiles)), UpdateStats({0: 1}, {0: 1}))
    counts = np.zeros(len(tiles), np.int64)
    counts[5] = 3
    sel = att.select(frame, counts)
    assert sel.tolist() == [0, 1, 5]  # tile 5: 3 objects; tile 0: new 2 * 0.5; then tie -> lowest index
    assert att.last_scores[5] == pytest.approx(3.0)
    assert att.last_scores[0] == pytest.approx(1.0)
    assert budget_tiles(24, 0.25) == 6 and budget_tiles(24, 5) == 5 and budget_tiles(24, 100) == 24
    for bad in (0, -0.5, 2.5):
        with pytest.raises(ConfigError, match="budget"):
            budget_tiles(24, bad)


def test_attention_motion_term_picks_the_moving_tile() -> None:
    tiles = tile_grid(640, 360, 128, 128, 16)
    cores = core_regions(tiles, 640, 360)
    att = TileAttention(cores, k=1, weights=AttentionWeights(objects=0, new=0, age=0, motion=1.0))
    frame = np.zeros((360, 640, 3), np.uint8)
    att.select(frame, np.zeros(len(tiles), np.int64))
    att.update(np.arange(len(tiles)), UpdateStats())
    moved = frame.copy()
    moved[300:340, 600:640] = 255  # change inside the bottom-right tile only
    sel = att.select(moved, np.zeros(len(tiles), np.int64))
    assert sel.tolist() == [len(tiles) - 1]
    assert att.last_scores[-1] > 0 and np.count_nonzero(att.last_scores) == 1


def test_modes_on_moving_squares(blob_detector: BlobDetector) -> None:
    seqs = [lambda: square_frames(25, objects=5, side=12, speed=1.0, seed=3)]
    cfg = STPConfig(min_overlap=24, budget=0.3, max_age=6)
    cmp = compare_modes(seqs, blob_detector, cfg)
    m = cmp.metrics
    n_tiles = len(cmp.tiles)
    assert n_tiles == 24  # 6 x 4
    assert m["tiles"]["recall"] == pytest.approx(1.0) and m["tiles"]["precision"] == pytest.approx(1.0)
    assert m["resize"]["recall"] < 0.2  # 12 px squares shrink below the 6 px minimum at 640 -> 128
    assert m["stp"]["recall"] >= 0.9
    assert m["tiles"]["tiles_per_frame"] == n_tiles and m["resize"]["tiles_per_frame"] == 1
    assert m["stp"]["tiles_per_frame"] == pytest.approx((n_tiles + 24 * 8) / 25)  # all once, then 8 per frame
    assert m["stp"]["relative_energy"] == pytest.approx(m["stp"]["tiles_per_frame"] / n_tiles)


def test_stp_is_deterministic(blob_detector: BlobDetector) -> None:
    cfg = STPConfig(min_overlap=24, budget=4)
    runs = [process_video((f for f, _ in square_frames(12, seed=1)), BlobDetector(), "stp", cfg) for _ in range(2)]
    for a, b in zip(runs[0].frames, runs[1].frames, strict=True):
        assert a.processed.tolist() == b.processed.tolist()
        assert np.array_equal(a.detections.boxes, b.detections.boxes)


def test_processor_rejects_bad_frames_and_tiles(blob_detector: BlobDetector) -> None:
    with pytest.raises(ConfigError, match="larger than"):
        FrameProcessor(BlobDetector(size=512), "tiles", (320, 240))
    with pytest.raises(ConfigError, match="mode"):
        FrameProcessor(blob_detector, "fast", (640, 360))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_overlap"):
        FrameProcessor(blob_detector, "stp", (640, 360), STPConfig(min_overlap=0))
    with pytest.raises(ConfigError, match="budget"):
        FrameProcessor(blob_detector, "stp", (640, 360), STPConfig(budget=-1))
    proc = FrameProcessor(blob_detector, "tiles", (640, 360))
    from crosslayer.errors import DataError

    with pytest.raises(DataError, match="shape"):
        proc.step(np.zeros((100, 100, 3), np.uint8))


def test_interrupt_keeps_partial_results(blob_detector: BlobDetector) -> None:
    def frames():  # type: ignore[no-untyped-def]
        for i, (f, _) in enumerate(square_frames(10)):
            if i == 4:
                raise KeyboardInterrupt
            yield f

    run = process_video(frames(), blob_detector, "stp", STPConfig(min_overlap=24))
    assert run.interrupted and len(run.frames) == 4

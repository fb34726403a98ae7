from __future__ import annotations

import numpy as np
import pytest
from detect_helpers import BlobDetector, FixedInputDetector, square_frames

from crosslayer.detect.attention import AttentionWeights, TileAttention, budget_tiles
from crosslayer.detect.compare import compare_modes
from crosslayer.detect.detections import Detections
from crosslayer.detect.memory import TileMemory, UpdateStats
from crosslayer.detect.pipeline import FrameProcessor, STPConfig, process_video
from crosslayer.detect.protocol import MemoDetector, TuningGrid, choose_on_validation, run_test, summarize_seeds
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
    for mode in ("tiles", "full_frame"):
        assert m[mode]["recall"] == pytest.approx(1.0) and m[mode]["precision"] == pytest.approx(1.0)
    assert m["resize"]["recall"] < 0.2  # 12 px squares shrink below the 6 px minimum at 640 -> 128
    assert m["stp"]["recall"] >= 0.9
    assert m["tiles"]["tiles_per_frame"] == n_tiles and m["resize"]["tiles_per_frame"] == 1
    assert m["stp"]["tiles_per_frame"] == pytest.approx((n_tiles + 24 * 8) / 25)  # all once, then 8 per frame
    assert m["stp"]["relative_energy"] == pytest.approx(m["stp"]["tiles_per_frame"] / n_tiles)
    # compute: resize one tile, tiles all of them, the whole frame its area (640x360 = 14.06 tiles of 128x128)
    assert m["resize"]["macs_per_frame"] == 1000 and m["tiles"]["macs_per_frame"] == 24_000
    assert m["full_frame"]["macs_per_frame"] == 1000 * 640 * 360 // 128 ** 2
    assert m["stp"]["macs_per_frame"] == pytest.approx(1000 * m["stp"]["tiles_per_frame"])
    assert len(m["stp"]["frame_ms"]) == 25 and m["stp"]["recall_by_size"]["small"] >= 0.9
    with pytest.raises(ConfigError, match="fixed input size"):
        compare_modes(seqs, FixedInputDetector(), cfg)


def test_per_mode_detectors_and_sparse_ground_truth(blob_detector: BlobDetector) -> None:
    def frames():  # type: ignore[no-untyped-def]
        for i, (f, gt) in enumerate(square_frames(10, objects=3, side=40, seed=2)):
            yield f, gt if i % 3 == 0 else None  # ground truth on frames 0, 3, 6, 9 only

    small_eye = BlobDetector(min_side=4)  # resize: squares of 40 px become 8 px
    cmp = compare_modes([frames], {"resize": small_eye, "full_frame": blob_detector, "tiles": blob_detector,
                                   "stp": blob_detector}, STPConfig(min_overlap=48))
    assert cmp.scored == [0, 3, 6, 9] and not cmp.pseudo_gt and len(cmp.outputs["stp"]) == 10
    assert cmp.metrics["resize"]["recall"] == pytest.approx(1.0) and small_eye.tiles_seen == 10
    assert cmp.metrics["tiles"]["n_gt"] == 12 and cmp.metrics["tiles"]["frames_scored"] == 4


def test_choices_come_from_validation_and_replay_the_detector(blob_detector: BlobDetector) -> None:
    val = [lambda: square_frames(12, objects=4, side=12, speed=2.0, seed=5)]
    dets = {m: blob_detector for m in ("resize", "full_frame", "tiles", "stp")}
    grid = TuningGrid(thresholds=(0.5, 0.95), max_misses=(0, 2), max_age=(3, 6), motion_threshold=(20.0,))
    ch = choose_on_validation(val, dets, STPConfig(min_overlap=24, budget=0.25), grid)
    # the blob detector scores 0.9: threshold 0.95 keeps nothing (F1 0), 0.5 keeps everything
    assert ch.thresholds == {"resize": 0.5, "full_frame": 0.5, "tiles": 0.5, "stp": 0.5}
    assert ch.stp.max_misses in (0, 2) and ch.stp.max_age in (3, 6) and ch.stp.budget == 0.25
    rows = ch.tried["stp"]
    assert len(rows) == 2 + 2 + 2 + 1 and {r["searching"] for r in rows} == {"threshold", "max_misses", "max_age",
                                                                            "motion_threshold"}
    best = max(r["f1"] for r in rows if r["searching"] == "max_age")
    assert ch.tried["tiles"][0]["f1"] == pytest.approx(1.0)
    assert any(r["f1"] == best and r["max_age"] == ch.stp.max_age for r in rows if r["searching"] == "max_age")
    # step 1 ran each distinct tile once (at most 12 frames x 24 tiles, + whole and resized frames); the seven
    # STP runs (hundreds of tiles) were replayed from memory
    assert blob_detector.tiles_seen <= 12 * 24 + 12 + 12
    cmp = run_test([lambda: square_frames(8, objects=4, side=12, seed=6)], dets, ch)
    assert set(cmp.metrics) == {"resize", "full_frame", "tiles", "stp"}


def test_memo_detector_answers_a_seen_tile_from_memory(blob_detector: BlobDetector) -> None:
    memo = MemoDetector(blob_detector)
    tiles = np.stack([next(square_frames(1, size=(128, 128), objects=1, seed=s))[0] for s in range(3)])
    a = memo.detect(tiles)
    b = memo.detect(tiles[[2, 0]])
    assert blob_detector.tiles_seen == 3 and memo.hits == 2
    assert np.array_equal(b[0].boxes, a[2].boxes) and np.array_equal(b[1].boxes, a[0].boxes)


def test_summaries_over_seeds_pair_the_differences() -> None:
    seeds = [{"stp": {"recall": 0.80, "precision": 0.7, "ap50": 0.6, "f1": 0.5},
              "full_frame": {"recall": 0.85, "precision": 0.7, "ap50": 0.7, "f1": 0.5}},
             {"stp": {"recall": 0.90, "precision": 0.7, "ap50": 0.6, "f1": 0.5},
              "full_frame": {"recall": 0.91, "precision": 0.6, "ap50": 0.7, "f1": 0.5}}]
    s = summarize_seeds(seeds, keys=("recall",))
    assert s["stp"]["recall"]["mean"] == pytest.approx(0.85)
    assert s["stp"]["recall"]["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    d = s["differences_pp"]["stp_minus_full_frame"]
    assert d["recall"]["per_seed"] == pytest.approx([-5.0, -1.0]) and d["recall"]["mean"] == pytest.approx(-3.0)
    assert d["precision"]["per_seed"] == pytest.approx([0.0, 10.0]) and "stp_minus_tiles" not in s["differences_pp"]


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

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crosslayer.detect.boxes import nms, pairwise_overlap
from crosslayer.detect.detections import Detections
from crosslayer.detect.tiling import (
    PAD_VALUE,
    axis_starts,
    core_regions,
    letterbox_frame,
    merge_tile_detections,
    owner_tile,
    pad_frame,
    tile_grid,
)
from crosslayer.errors import ConfigError


def test_paper_example_full_hd_with_384_tiles() -> None:
    tiles = tile_grid(1920, 1080, 384, 384, 64)
    assert tiles.shape == (24, 4)  # 6 x 4 tiles
    assert tiles[:, 0].min() == 0 and tiles[:, 2].max() == 1920
    assert tiles[:, 1].min() == 0 and tiles[:, 3].max() == 1080


@settings(max_examples=60, deadline=None)
@given(length=st.integers(64, 4000), tile=st.integers(32, 1024), overlap=st.integers(1, 200))
def test_axis_cover_uniform_overlap(length: int, tile: int, overlap: int) -> None:
    if tile > length or overlap >= tile:
        with pytest.raises(ConfigError):
            axis_starts(length, tile, overlap)
        return
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    gaps = np.diff(starts)
    if len(starts) > 1:
        assert (tile - gaps >= overlap - 1).all()  # overlap kept (rounding: at most 1 px less)
        assert gaps.max() - gaps.min() <= 1  # uniform
        # the fewest tiles: one fewer could not keep the overlap
        n = len(starts)
        assert n == 2 or (length - tile) / (n - 2) > tile - overlap


def test_bad_tiling_raises_clear_errors() -> None:
    with pytest.raises(ConfigError, match="larger than the frame"):
        tile_grid(300, 200, 384, 384, 64)
    with pytest.raises(ConfigError, match="overlap"):
        tile_grid(1920, 1080, 384, 384, 0)
    with pytest.raises(ConfigError, match="overlap"):
        tile_grid(1920, 1080, 384, 384, -5)


def test_cores_partition_the_frame_and_sit_inside_tiles() -> None:
    tiles = tile_grid(1920, 1080, 384, 384, 64)
    cores = core_regions(tiles, 1920, 1080)
    area = ((cores[:, 2] - cores[:, 0]) * (cores[:, 3] - cores[:, 1])).sum()
    assert area == pytest.approx(1920 * 1080)
    assert (cores[:, :2] >= tiles[:, :2]).all() and (cores[:, 2:] <= tiles[:, 2:]).all()
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [1920, 1080], (500, 2))
    own = owner_tile(pts, cores)
    c = cores[own]
    assert ((pts >= c[:, :2]) & (pts < c[:, 2:])).all()


def test_overlap_matrices_and_nms() -> None:
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], np.float32)
    iou = pairwise_overlap(a, a)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0.0 and np.allclose(np.diag(iou), 1.0)
    small = np.array([[2, 2, 6, 6]], np.float32)
    assert pairwise_overlap(small, a[:1], "ios")[0, 0] == pytest.approx(1.0)
    keep = nms(a, np.array([0.9, 0.8, 0.7]), 0.4)
    assert keep.tolist() == [0, 1, 2]
    keep = nms(a, np.array([0.7, 0.8, 0.9]), 0.3)
    assert keep.tolist() == [2, 1]
    keep = nms(a, np.array([0.9, 0.8, 0.7]), 0.3, classes=np.array([0, 1, 0]))
    assert keep.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="overlap kind"):
        pairwise_overlap(a, a, "giou")  # type: ignore[arg-type]


def test_merge_shifts_and_removes_cross_tile_duplicates() -> None:
    tiles = np.array([[0, 0, 100, 100], [80, 0, 180, 100]], np.int32)
    # the same object at frame x 85..95 seen by both tiles (and clipped by the second one's neighbour)
    d0 = Detections(np.array([[85, 10, 95, 20]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64))
    d1 = Detections(np.array([[5, 10, 15, 20], [50, 50, 60, 60]], np.float32), np.array([0.8, 0.7], np.float32),
                    np.zeros(2, np.int64))
    merged = merge_tile_detections([d0, d1], tiles, np.array([0, 1]))
    assert len(merged) == 2
    assert merged.boxes[0].tolist() == [85, 10, 95, 20]
    assert merged.boxes[1].tolist() == [130, 50, 140, 60]


def test_letterbox_keeps_the_aspect_ratio_and_padding_keeps_the_frame() -> None:
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[500:600, 1000:1100] = 255
    box, back = letterbox_frame(frame, 384, 384)
    assert box.shape == (384, 384, 3) and back == pytest.approx(5.0)
    assert (box[216:] == PAD_VALUE).all()  # 1920x1080 -> 384x216, grey below
    ys, xs = np.nonzero(box[..., 0] > 128)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (200, 100, 220, 120)  # the square, scaled by 0.2
    padded = pad_frame(frame, 16)
    assert padded.shape == (1088, 1920, 3) and np.array_equal(padded[:1080], frame)
    assert (padded[1080:] == PAD_VALUE).all() and pad_frame(frame, 8) is frame


def test_a_tile_keeps_only_the_objects_centred_in_its_core() -> None:
    tiles = np.array([[0, 0, 100, 100], [60, 0, 160, 100]], np.int32)  # 40 px overlap
    cores = core_regions(tiles, 160, 100)
    assert cores[:, 2].tolist() == [80, 160]
    # one 30 px object at frame x 45..75 (centre 60, core 0): whole in tile 0, clipped to 60..75 in tile 1,
    # where the clipped box scores higher
    whole = Detections(np.array([[45, 40, 75, 70]], np.float32), np.array([0.6], np.float32), np.zeros(1, np.int64))
    part = Detections(np.array([[0, 40, 15, 70]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64))
    plain = merge_tile_detections([whole, part], tiles, np.array([0, 1]))
    assert plain.boxes.tolist() == [[60, 40, 75, 70]]  # NMS alone keeps the clipped box
    owned = merge_tile_detections([whole, part], tiles, np.array([0, 1]), cores=cores)
    assert owned.boxes.tolist() == [[45, 40, 75, 70]]

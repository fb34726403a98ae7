"""Tiling a high-resolution frame for a small-input detector, and merging the tiles' detections.

Selective Tile Processing (Plastiras et al., "Efficient ConvNet-based object detection for unmanned
aerial vehicles by selective tile processing", ICDSC 2018): a frame is covered by the fewest
detector-sized tiles that keep at least a minimum overlap, spread uniformly so that the overlap is
the same between every pair of neighbours. Detections are shifted back to frame coordinates and
duplicates across overlapping tiles removed with NMS (as SAHI's sliced inference does, Akyon et al.,
ICIP 2022). Pure NumPy / OpenCV functions.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

from crosslayer.detect.boxes import Overlap, nms
from crosslayer.detect.detections import Detections, concat
from crosslayer.errors import ConfigError

__all__ = ["PAD_VALUE", "axis_starts", "core_regions", "crop_tiles", "letterbox_frame", "merge_tile_detections",
           "owner_tile", "pad_frame", "resize_frame", "tile_grid"]

PAD_VALUE = 114  # grey fill of letterbox and padding borders (as YOLO's letterbox)


def axis_starts(length: int, tile: int, min_overlap: int) -> list[int]:
    """Start offsets of the fewest tiles of size ``tile`` covering ``length`` with >= ``min_overlap`` overlap.

    n = ceil((length - overlap) / (tile - overlap)) tiles; the starts are spread uniformly (rounded), so
    neighbouring tiles overlap by the same amount (within one pixel) of at least ``min_overlap``.
    """
    if tile > length:
        raise ConfigError(f"tile size {tile} is larger than the frame side {length}; use a tile of at most "
                          f"{length} px or the 'resize' mode")
    if tile <= 0:
        raise ConfigError(f"tile size must be positive, got {tile}")
    if min_overlap <= 0 or min_overlap >= tile:
        raise ConfigError(f"overlap = {min_overlap} is out of range; allowed 1 to {tile - 1} px (less than the tile)")
    if tile == length:
        return [0]
    n = math.ceil((length - min_overlap) / (tile - min_overlap))
    n = max(n, 2)
    step = (length - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


def tile_grid(frame_w: int, frame_h: int, tile_w: int, tile_h: int, min_overlap: int) -> NDArray[np.int32]:
    """Tile boxes (T, 4) ``x1, y1, x2, y2``, row-major, covering a ``frame_w`` x ``frame_h`` frame."""
    xs = axis_starts(frame_w, tile_w, min_overlap)
    ys = axis_starts(frame_h, tile_h, min_overlap)
    return np.array([[x, y, x + tile_w, y + tile_h] for y in ys for x in xs], dtype=np.int32)


def core_regions(tiles: NDArray[np.int32], frame_w: int, frame_h: int) -> NDArray[np.float32]:
    """Each tile's core: the part of the frame it owns, split at the middle of every overlap.

    The cores partition the frame. With an overlap of at least the object size, an object whose centre
    lies in a tile's core is entirely inside that tile.
    """
    xs = sorted({int(t[0]) for t in tiles})
    ys = sorted({int(t[1]) for t in tiles})
    tw, th = int(tiles[0, 2] - tiles[0, 0]), int(tiles[0, 3] - tiles[0, 1])

    def cuts(starts: list[int], size: int, length: int) -> list[float]:
        inner = [(starts[i + 1] + starts[i] + size) / 2 for i in range(len(starts) - 1)]
        return [0.0, *inner, float(length)]

    cx, cy = cuts(xs, tw, frame_w), cuts(ys, th, frame_h)
    out = np.zeros((len(tiles), 4), np.float32)
    for k, t in enumerate(tiles):
        i, j = xs.index(int(t[0])), ys.index(int(t[1]))
        out[k] = (cx[i], cy[j], cx[i + 1], cy[j + 1])
    return out


def owner_tile(points: NDArray[np.floating], cores: NDArray[np.float32]) -> NDArray[np.int64]:
    """Index of the core containing each (x, y) point (points outside the frame go to the nearest core)."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    if len(p) == 0:
        return np.zeros(0, np.int64)
    cx = np.clip(p[:, 0], cores[:, 0].min(), np.nextafter(cores[:, 2].max(), 0))
    cy = np.clip(p[:, 1], cores[:, 1].min(), np.nextafter(cores[:, 3].max(), 0))
    inside = ((cx[:, None] >= cores[None, :, 0]) & (cx[:, None] < cores[None, :, 2])
              & (cy[:, None] >= cores[None, :, 1]) & (cy[:, None] < cores[None, :, 3]))
    return inside.argmax(axis=1).astype(np.int64)


def crop_tiles(frame: NDArray[np.uint8], tiles: NDArray[np.int32], indices: NDArray[np.int64] | None = None
               ) -> NDArray[np.uint8]:
    """The tiles ``indices`` (default: all) of ``frame`` (H, W, C) as one batch (K, th, tw, C)."""
    idx = np.arange(len(tiles)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        th, tw = int(tiles[0, 3] - tiles[0, 1]), int(tiles[0, 2] - tiles[0, 0])
        return np.zeros((0, th, tw, frame.shape[2]), frame.dtype)
    return np.stack([frame[tiles[i, 1]:tiles[i, 3], tiles[i, 0]:tiles[i, 2]] for i in idx])


def resize_frame(frame: NDArray[np.uint8], width: int, height: int) -> tuple[NDArray[np.uint8], float, float]:
    """The whole frame resized to the detector input (the 'resize' baseline) and the factors back to the frame."""
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(small, np.uint8), w / width, h / height


def letterbox_frame(frame: NDArray[np.uint8], width: int, height: int) -> tuple[NDArray[np.uint8], float]:
    """The whole frame scaled by ``s = min(width / W, height / H)`` (aspect ratio kept, area interpolation)
    into the top-left corner of a ``width`` x ``height`` grey canvas, and ``1 / s`` (back to the frame)."""
    h, w = frame.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, min(width, round(w * s))), max(1, min(height, round(h * s)))
    canvas = np.full((height, width, frame.shape[2]), PAD_VALUE, np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas, 1.0 / s


def pad_frame(frame: NDArray[np.uint8], multiple: int) -> NDArray[np.uint8]:
    """``frame`` padded at the bottom and right (grey) to multiples of ``multiple`` px."""
    h, w = frame.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return frame
    return np.asarray(cv2.copyMakeBorder(frame, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3), np.uint8)


def merge_tile_detections(per_tile: list[Detections], tiles: NDArray[np.int32], indices: NDArray[np.int64], *,
                          nms_threshold: float = 0.5, kind: Overlap = "ios", cores: NDArray[np.floating] | None = None,
                          core_margin: float = 8.0) -> Detections:
    """Shift each tile's detections to frame coordinates and drop cross-tile duplicates (class-aware NMS).

    ``kind='ios'`` (intersection over the smaller box) also removes the clipped part-of-an-object box a
    tile sees at its border when the neighbouring tile sees the whole object. With ``cores`` a tile keeps
    only the detections whose centre lies in its own core (grown by ``core_margin`` px): when the overlap is
    at least the object size, the tile owning an object's centre sees all of it, and a neighbour's clipped
    box of it (whose centre falls in the owner's core) is dropped even when it scores higher.
    """
    shifted = [d.shifted(float(tiles[i, 0]), float(tiles[i, 1])) for d, i in zip(per_tile, indices, strict=True)]
    if cores is not None:
        kept = []
        for d, i in zip(shifted, indices, strict=True):
            c = np.asarray(cores[i], np.float64) + np.array([-core_margin, -core_margin, core_margin, core_margin])
            cx, cy = (d.boxes[:, 0] + d.boxes[:, 2]) / 2, (d.boxes[:, 1] + d.boxes[:, 3]) / 2
            kept.append(d.take((cx >= c[0]) & (cx < c[2]) & (cy >= c[1]) & (cy < c[3])))
        shifted = kept
    allx = concat(shifted)
    if len(allx) == 0:
        return allx
    keep = nms(allx.boxes, allx.scores, nms_threshold, classes=allx.classes, kind=kind)
    return allx.take(keep)

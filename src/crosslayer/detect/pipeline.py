"""Running a detector over a video in one of four modes, frame by frame.

* ``resize``: the whole frame scaled into the detector's input, aspect ratio kept (letterbox); small
  objects shrink or vanish, large ones survive;
* ``full_frame``: a fully convolutional detector on the whole frame at native resolution (padded to its
  stride): the accuracy of tiling without the tiles' overlap, at the cost of the frame's full area;
* ``tiles``: every tile of the uniform grid every frame, merged by shift + cross-tile NMS (as SAHI's
  sliced inference, Akyon et al., ICIP 2022);
* ``stp``: Selective Tile Processing (Plastiras et al., ICDSC 2018): the attention mechanism picks
  the tiles to process within a budget, the memory mechanism carries the other tiles' objects forward.

Every frame's compute is counted as the detector's multiply-accumulates (MACs) on what it was fed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from crosslayer.config import check_range
from crosslayer.data.video import TruncatedVideoError
from crosslayer.detect.attention import AttentionWeights, TileAttention, budget_tiles
from crosslayer.detect.boxes import nms
from crosslayer.detect.detections import Detections
from crosslayer.detect.detectors import Detector, full_frame_macs, pad_multiple, run_detector
from crosslayer.detect.memory import TileMemory, UpdateStats
from crosslayer.detect.tiling import (
    core_regions,
    crop_tiles,
    letterbox_frame,
    merge_tile_detections,
    pad_frame,
    tile_grid,
)
from crosslayer.errors import ConfigError, DataError

__all__ = ["MODES", "FrameOutput", "FrameProcessor", "Mode", "STPConfig", "VideoRun", "process_video"]

log = logging.getLogger(__name__)
Mode = Literal["resize", "full_frame", "tiles", "stp"]
MODES: tuple[Mode, ...] = ("resize", "full_frame", "tiles", "stp")


@dataclass(frozen=True, kw_only=True)
class STPConfig:
    """Tiling (``min_overlap`` px), the STP ``budget`` (fraction of tiles in (0, 1) or a count >= 1),
    ``max_age`` (frames before a tile is forced in; 0 = never), memory matching IoU and tolerated misses,
    cross-tile merge threshold (intersection over the smaller box), whether a tile keeps only the detections
    centred in its core (``own_core``: right when the overlap is at least the object size), and the attention
    terms."""

    min_overlap: int = 64
    budget: float = 0.25
    max_age: int = 10
    match_iou: float = 0.3
    max_misses: int = 1
    merge_threshold: float = 0.5
    own_core: bool = True
    use_motion: bool = True
    use_velocity: bool = True
    motion_threshold: float = 20.0
    weights: AttentionWeights = field(default_factory=AttentionWeights)

    def validate(self) -> None:
        if self.min_overlap <= 0:
            raise ConfigError(f"min_overlap = {self.min_overlap} is not allowed; use a positive overlap in px")
        if not 0 < self.budget < float("inf"):
            raise ConfigError(f"budget = {self.budget} is not allowed; use a fraction in (0, 1) or a tile count >= 1")
        if not all(np.isfinite([self.match_iou, self.merge_threshold, self.motion_threshold])):
            raise ConfigError("match_iou, merge_threshold and motion_threshold must be finite numbers")
        check_range("max_age", self.max_age, 0)
        check_range("match_iou", self.match_iou, 0.0, 1.0, lo_open=True)
        check_range("max_misses", self.max_misses, 0)
        check_range("merge_threshold", self.merge_threshold, 0.0, 1.0, lo_open=True)
        check_range("motion_threshold", self.motion_threshold, 0.0)
        self.weights.validate()


@dataclass
class FrameOutput:
    """One processed frame: detections in frame pixels, tiles run through the detector, time taken, and the
    detector's multiply-accumulates on this frame."""

    index: int
    detections: Detections
    processed: NDArray[np.int64]
    tiles_processed: int
    seconds: float
    new_objects: int = 0
    macs: int = 0


@dataclass
class VideoRun:
    mode: Mode
    frames: list[FrameOutput]
    n_tiles: int
    tiles: NDArray[np.int32]
    interrupted: bool = False
    error: str | None = None

    def tiles_per_frame(self) -> float:
        return float(np.mean([f.tiles_processed for f in self.frames])) if self.frames else 0.0

    def macs_per_frame(self) -> float:
        return float(np.mean([f.macs for f in self.frames])) if self.frames else 0.0

    def fps(self) -> float:
        """Frames per second from the median per-frame processing time (frame decoding excluded)."""
        return 1.0 / max(float(np.median([f.seconds for f in self.frames])), 1e-9) if self.frames else 0.0


class FrameProcessor:
    """The per-video state of one mode: tile grid, and for ``stp`` the memory and attention."""

    def __init__(self, detector: Detector, mode: Mode, frame_size: tuple[int, int], cfg: STPConfig | None = None
                 ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is not allowed; choose one of {', '.join(MODES)}")
        self.cfg = cfg or STPConfig()
        self.cfg.validate()
        self.detector, self.mode = detector, mode
        self.width, self.height = frame_size
        tw, th = detector.input_size
        if mode in ("resize", "full_frame"):
            self.tiles = np.array([[0, 0, self.width, self.height]], np.int32)
            if mode == "full_frame":
                self.pad = pad_multiple(detector)
                self.frame_macs = full_frame_macs(detector, self.width + -self.width % self.pad,
                                                  self.height + -self.height % self.pad)
        else:
            if tw > self.width or th > self.height:
                raise ConfigError(f"tile {tw}x{th} is larger than the {self.width}x{self.height} frame; use a "
                                  "smaller detector input or the 'resize' mode")
            self.tiles = tile_grid(self.width, self.height, tw, th, self.cfg.min_overlap)
        self.cores = core_regions(self.tiles, self.width, self.height) if mode in ("tiles", "stp") \
            else self.tiles.astype(np.float32)
        self.memory = TileMemory(self.cores, match_iou=self.cfg.match_iou, use_velocity=self.cfg.use_velocity,
                                 max_misses=self.cfg.max_misses)
        k = budget_tiles(len(self.tiles), self.cfg.budget)
        self.attention = TileAttention(self.cores, k, self.cfg.weights, max_age=self.cfg.max_age,
                                       use_motion=self.cfg.use_motion, motion_threshold=self.cfg.motion_threshold)
        self.index = 0

    def step(self, frame: NDArray[np.uint8]) -> FrameOutput:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[1] != self.width or frame.shape[0] != self.height:
            raise DataError(f"frame {self.index} has shape {frame.shape}; expected ({self.height}, {self.width}, 3)")
        t0 = time.perf_counter()
        f = self.index
        new = 0
        if self.mode == "resize":
            tw, th = self.detector.input_size
            small, back = letterbox_frame(frame, tw, th)
            dets = run_detector(self.detector, small[None])[0].shifted(0.0, 0.0, back, back)
            sel = np.zeros(1, np.int64)
            macs = self.detector.macs_per_tile
        elif self.mode == "full_frame":
            dets = run_detector(self.detector, pad_frame(frame, self.pad)[None])[0]
            sel = np.zeros(1, np.int64)
            macs = self.frame_macs
        elif self.mode == "tiles":
            sel = np.arange(len(self.tiles), dtype=np.int64)
            macs = len(sel) * self.detector.macs_per_tile
            per_tile = run_detector(self.detector, crop_tiles(frame, self.tiles, sel))
            dets = merge_tile_detections(per_tile, self.tiles, sel, nms_threshold=self.cfg.merge_threshold,
                                         cores=self.cores if self.cfg.own_core else None)
        else:
            sel = self.attention.select(frame, self.memory.counts(f))
            macs = len(sel) * self.detector.macs_per_tile
            per_tile = run_detector(self.detector, crop_tiles(frame, self.tiles, sel))
            merged = merge_tile_detections(per_tile, self.tiles, sel, nms_threshold=self.cfg.merge_threshold,
                                           cores=self.cores if self.cfg.own_core else None)
            stats: UpdateStats = self.memory.update(f, sel, merged)
            self.attention.update(sel, stats)
            new = sum(stats.new.values())
            remembered = Detections(self.memory.predicted(f), self.memory.scores, self.memory.classes)
            keep = nms(remembered.boxes, remembered.scores, self.cfg.merge_threshold, classes=remembered.classes,
                       kind="ios")
            dets = remembered.take(np.sort(keep))
        self.index += 1
        return FrameOutput(f, dets, sel, len(sel), time.perf_counter() - t0, new, int(macs))


def process_video(frames: Iterable[NDArray[np.uint8]], detector: Detector, mode: Mode, cfg: STPConfig | None = None,
                  *, on_frame: Callable[[FrameOutput, NDArray[np.uint8], NDArray[np.int32]], None] | None = None,
                  total: int | None = None, desc: str = "") -> VideoRun:
    """Run ``mode`` over ``frames`` with a progress bar; ``on_frame(output, frame, tiles)`` sees every frame.
    Ctrl-C (or a video that ends early, ``TruncatedVideoError``) stops and returns the frames done so far
    (``interrupted=True``, the reason in ``error``) instead of losing them."""
    from crosslayer.train import progress

    outputs: list[FrameOutput] = []
    proc: FrameProcessor | None = None
    interrupted = False
    error: str | None = None
    with progress() as bar:
        task = bar.add_task(desc or f"detect ({mode})", total=total, info="")
        try:
            for frame in frames:
                if proc is None:
                    proc = FrameProcessor(detector, mode, (frame.shape[1], frame.shape[0]), cfg)
                out = proc.step(frame)
                outputs.append(out)
                if on_frame is not None:
                    on_frame(out, frame, proc.tiles)
                bar.update(task, advance=1, info=f"{out.tiles_processed} tiles, {len(out.detections)} objects")
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted after %d frames; keeping the results so far", len(outputs))
        except TruncatedVideoError as exc:
            if proc is None:
                raise
            interrupted, error = True, str(exc)
            log.warning("%s; keeping the results of the %d frames read", exc, len(outputs))
    if proc is None:
        raise DataError("the video has no frames")
    return VideoRun(mode, outputs, len(proc.tiles), proc.tiles, interrupted, error)

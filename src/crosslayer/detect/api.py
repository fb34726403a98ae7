"""The verb of the detection step: :func:`detect_video` runs a detector over a video as one resized frame, the
whole frame, all tiles, or with Selective Tile Processing (Plastiras et al., ICDSC 2018: attention and memory
pick the tiles worth the detector each frame), and returns the per-frame detections with the speed and compute
figures, and the recall / precision / AP@0.5 when the frames come with ground truth.

:func:`open_video` opens the frames: a video file (bounded decoding, :mod:`crosslayer.data.video`) or
``"synthetic"``, a held-out synthetic 1920x1080 sequence with exact boxes (:mod:`crosslayer.data.scenes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crosslayer.config import MAX_TILE, Config, check_range
from crosslayer.data.scenes import CLASS_NAMES, SceneConfig
from crosslayer.data.video import VideoReader, VideoWriter
from crosslayer.detect.detectors import Detector
from crosslayer.detect.factory import synthetic_sequences
from crosslayer.detect.metrics import evaluate_detections
from crosslayer.detect.pipeline import MODES, FrameOutput, Mode, STPConfig, VideoRun, process_video
from crosslayer.detect.plots import annotate_frame
from crosslayer.errors import ConfigError

__all__ = ["MAX_TILE", "DetectConfig", "DetectVideoResult", "VideoSource", "check_frame_size", "detect_video",
           "open_video"]

GroundTruth = tuple[NDArray[np.float32], NDArray[np.int64]]


@dataclass(frozen=True, kw_only=True)
class DetectConfig(Config):
    """``mode``: resize, full_frame, tiles or stp; ``tile``: the tile (detector input) side in px; ``min_overlap``:
    the least overlap of neighbouring tiles (0: a third of the tile); ``budget``: STP's tiles per frame, a fraction
    in (0, 1) or a count; ``max_frames``: stop after N frames (0 = all; a synthetic video has 60 by default)."""

    mode: Mode = "stp"
    tile: int = 384
    min_overlap: int = 0
    budget: float = 0.25
    max_frames: int = 0

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not allowed; choose one of {', '.join(MODES)}")
        check_range("max_frames", self.max_frames, 0)
        check_range("tile", self.tile, 32, MAX_TILE)
        check_range("min_overlap", self.min_overlap, 0, self.tile - 1)
        self.stp().validate()

    def stp(self) -> STPConfig:
        return STPConfig(min_overlap=self.min_overlap or self.tile // 3, budget=self.budget)


@dataclass
class VideoSource:
    """Frames (each with its ground truth boxes and labels, or None) of ``size`` (width, height) at ``fps``;
    ``total`` frames when known; ``close`` releases the decoder."""

    frames: Iterable[tuple[NDArray[np.uint8], GroundTruth | None]]
    size: tuple[int, int]
    fps: float = 25.0
    total: int | None = None
    close: Callable[[], None] = field(default=lambda: None)


def open_video(video: str | Path, *, max_frames: int = 0, seed: int = 0) -> VideoSource:
    """A video file's frames (decoding refuses oversized frames before the first), or for ``"synthetic"`` a
    held-out synthetic sequence of ``max_frames`` (default 60) frames with ground truth, seeded."""
    if str(video) == "synthetic":
        n = max_frames or 60
        scene = SceneConfig(num_frames=n)
        make = synthetic_sequences(1, scene, seed=seed)[0]
        return VideoSource(make(), (scene.width, scene.height), 25.0, n)
    reader = VideoReader(video, max_frames=max_frames)
    return VideoSource(((f, None) for f in reader), (reader.width, reader.height), reader.fps,
                       reader.frame_count or None, reader.close)


def check_frame_size(config: DetectConfig, size: tuple[int, int], tile_name: str = "tile") -> None:
    """Raise ``ConfigError`` if a tiling mode's tile does not fit in a ``size`` (width, height) frame."""
    if config.mode not in ("resize", "full_frame") and config.tile > min(size):
        raise ConfigError(f"{tile_name} {config.tile} is larger than the {size[0]}x{size[1]} frame; use at most "
                          f"{min(size)} px or the resize / full_frame mode")


@dataclass
class DetectVideoResult:
    """The run (per-frame ``FrameOutput``: processed tiles, detections, seconds, MACs; the tile grid; whether it
    was interrupted or the video failed) and, with ground truth, its ``recall`` / ``precision`` / ``ap50``
    (``class_agnostic``: scored on boxes only, the detector's classes not being the scenes')."""

    mode: Mode
    run: VideoRun
    class_names: tuple[str, ...]
    recall: float | None = None
    precision: float | None = None
    ap50: float | None = None
    class_agnostic: bool | None = None

    def metrics(self) -> dict[str, Any]:
        """Flat figures; a NaN (precision without detections) becomes None, so the JSON stays strict."""
        run = self.run
        m: dict[str, Any] = {"mode": self.mode, "frames": len(run.frames), "tiles_total": run.n_tiles,
                             "tiles_per_frame": run.tiles_per_frame(), "macs_per_frame": run.macs_per_frame(),
                             "fps": run.fps(), "interrupted": run.interrupted, "error": run.error}
        if self.class_agnostic is not None:
            m.update({"class_agnostic": self.class_agnostic, "recall": self.recall, "precision": self.precision,
                      "ap50": self.ap50})
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in m.items()}

    def detections_json(self) -> dict[str, Any]:
        """The tile grid and every frame's processed tiles and detections."""
        run = self.run
        return {"mode": self.mode, "tiles": run.tiles.tolist(), "frames": [
            {"index": f.index, "tiles": f.processed.tolist(), "detections": f.detections.to_json()}
            for f in run.frames]}


def detect_video(detector: Detector, config: DetectConfig,
                 video: VideoSource | str | Path | Sequence[NDArray[np.uint8]], *, seed: int = 0,
                 video_out: str | Path | None = None, desc: str | None = None) -> DetectVideoResult:
    """Run ``detector`` over ``video`` (a :class:`VideoSource`, a file or ``"synthetic"``, or a sequence of
    H x W x 3 uint8 frames) in ``config.mode``; ``video_out``: also write the frames annotated with the tiles
    processed and the detections. A Ctrl-C or a truncated video ends the run early with the frames done (the
    result says so); the source is closed when done."""
    if isinstance(video, (str, Path)):
        video = open_video(video, max_frames=config.max_frames, seed=seed)
    elif not isinstance(video, VideoSource):
        frames = list(video)
        if not frames:
            raise ConfigError("detect_video needs at least one frame")
        h, w = frames[0].shape[:2]
        video = VideoSource(((f, None) for f in frames), (w, h), total=len(frames))
    src = video
    truth: list[GroundTruth | None] = []
    writer: VideoWriter | None = None
    try:
        check_frame_size(config, src.size)

        def frames_only() -> Iterator[NDArray[np.uint8]]:
            for i, (frame, gt) in enumerate(src.frames):
                if config.max_frames and i >= config.max_frames:
                    return
                truth.append(gt)
                yield frame

        def on_frame(o: FrameOutput, frame: NDArray[np.uint8], tiles: NDArray[np.int32]) -> None:
            nonlocal writer
            if video_out is None:
                return
            if writer is None:
                w = min(frame.shape[1], 1280)
                writer = VideoWriter(video_out, src.fps, (w, round(frame.shape[0] * w / frame.shape[1])))
            writer.write(annotate_frame(frame, tiles, o.processed, o.detections, class_names=detector.class_names))

        try:
            run = process_video(frames_only(), detector, config.mode, config.stp(), on_frame=on_frame,
                                total=src.total, desc=desc or f"detect {config.mode}")
        finally:
            if writer is not None:
                writer.close()
    finally:
        src.close()
    res = DetectVideoResult(config.mode, run, tuple(detector.class_names))
    gts = [g for g in truth[:len(run.frames)] if g is not None]
    if run.frames and len(gts) == len(run.frames):
        agnostic = tuple(detector.class_names) != CLASS_NAMES  # another detector's classes: boxes only
        sc = evaluate_detections(gts, [f.detections for f in run.frames], num_classes=len(detector.class_names),
                                 class_agnostic=agnostic)
        res.recall, res.precision, res.ap50, res.class_agnostic = sc.recall, sc.precision, sc.ap50, agnostic
    return res

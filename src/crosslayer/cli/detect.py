"""``crosslayer detect VIDEO``: run a detector over a video as a resized frame, the whole frame, all tiles or
selective tile processing."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import typer

from crosslayer.cli.common import DeviceOpt, JsonOpt, SeedOpt, console, emit, handle_errors, setup_logging

MAX_TILE = 4096  # px; checked before a detector or a frame is built


def _with_gt(source: Iterator[tuple[np.ndarray, Any]], sink: list[Any]) -> Iterator[np.ndarray]:
    """Frames of ``source``, appending each frame's ground truth to ``sink`` as it goes."""
    for frame, gt in source:
        sink.append(gt)
        yield frame


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a job scheduler) stops the run as Ctrl-C does: the frames done are
    written and temporary files removed. (SIGKILL cannot be caught: its temporary video is removed by the
    next run writing to the same folder.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect_cmd)


@handle_errors
def detect_cmd(
    video: str = typer.Argument(..., help="A video file, or 'synthetic' for a held-out synthetic 1920x1080 "
                                          "sequence with exact boxes (then recall / precision / AP are reported)."),
    mode: str = typer.Option("stp", "--mode", help="resize, full_frame, tiles or stp."),
    detector: str = typer.Option("tiny", "--detector", help="tiny (trained here, cached; for resize, trained at the "
                                                            "resized scale), hog (OpenCV people detector) or "
                                                            "file.py:factory (code: it runs as code)."),
    tile: int = typer.Option(384, "--tile", help=f"Tile (detector input) size in px, 32 to {MAX_TILE} and at most "
                                                 "the frame's shorter side."),
    overlap: int = typer.Option(0, "--overlap", help="Minimum overlap between tiles in px (0: a third of the tile)."),
    budget: float = typer.Option(0.25, "--budget", help="STP: tiles per frame, a fraction in (0, 1) or a count."),
    max_frames: int = typer.Option(0, "--max-frames", help="Stop after N frames (0 = all)."),
    conf: float = typer.Option(0.5, "--conf", help="Tiny detector score threshold, in (0, 1)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (detections.json, metrics.json)."),
    video_out: Path = typer.Option(None, "--video-out", help="Also write an annotated video (.avi or .mp4)."),
    seed: int = SeedOpt, device: str = DeviceOpt, as_json: bool = JsonOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Detect objects in VIDEO; writes per-frame detections and speed / compute figures (partial on Ctrl-C,
    SIGTERM or a truncated video)."""
    setup_logging(verbose)
    from crosslayer.config import check_range
    from crosslayer.data.scenes import CLASS_NAMES, SceneConfig
    from crosslayer.data.video import VideoReader, VideoWriter
    from crosslayer.detect.factory import build_mode_detectors, synthetic_sequences
    from crosslayer.detect.metrics import evaluate_detections
    from crosslayer.detect.pipeline import MODES, FrameOutput, STPConfig, process_video
    from crosslayer.detect.plots import annotate_frame
    from crosslayer.errors import ConfigError, DataError
    from crosslayer.fileio import atomic_write_json, ensure_writable_dir

    # Everything taken from the command line is checked before a frame or a detector is allocated.
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is not allowed; choose one of {', '.join(MODES)}")
    if max_frames < 0:
        raise ConfigError(f"--max-frames {max_frames} is not allowed; use 0 (all) or a positive count")
    check_range("--tile", tile, 32, MAX_TILE)
    check_range("--overlap", overlap, 0, tile - 1)
    for name, value in (("--budget", budget), ("--conf", conf)):
        if not math.isfinite(value):
            raise ConfigError(f"{name} {value} is not allowed; use a finite number")
    check_range("--conf", conf, 0.0, 1.0, lo_open=True, hi_open=True)
    cfg = STPConfig(min_overlap=overlap or tile // 3, budget=budget)
    cfg.validate()
    out_dir = ensure_writable_dir(out)
    gts: list[tuple[np.ndarray, np.ndarray]] = []
    frames: Iterator[np.ndarray]
    total: int | None
    reader: VideoReader | None = None
    if video == "synthetic":
        n = max_frames or 60
        scene = SceneConfig(num_frames=n)
        make = synthetic_sequences(1, scene, seed=seed)[0]
        frames, total, fps_in, size = _with_gt(make(), gts), n, 25.0, (scene.width, scene.height)
    else:
        reader = VideoReader(video, max_frames=max_frames)  # refuses oversized frames before decoding one
        frames, total, fps_in, size = iter(reader), reader.frame_count or None, reader.fps, (reader.width,
                                                                                             reader.height)
    writer: VideoWriter | None = None
    try:
        if mode != "resize" and mode != "full_frame" and tile > min(size):
            raise ConfigError(f"--tile {tile} is larger than the {size[0]}x{size[1]} frame; use at most "
                              f"{min(size)} px or the resize / full_frame mode")
        det = build_mode_detectors(detector, (mode,), frame_size=size, tile=tile, conf_threshold=conf, seed=seed,
                                   device=device)[mode]

        def on_frame(o: FrameOutput, frame: np.ndarray, tiles: np.ndarray) -> None:
            nonlocal writer
            if video_out is None:
                return
            if writer is None:
                w = min(frame.shape[1], 1280)
                writer = VideoWriter(video_out, fps_in, (w, round(frame.shape[0] * w / frame.shape[1])))
            writer.write(annotate_frame(frame, tiles, o.processed, o.detections, class_names=det.class_names))

        with sigterm_as_interrupt():
            try:
                run = process_video(frames, det, mode, cfg, on_frame=on_frame, total=total, desc=f"detect {mode}")
            finally:
                if writer is not None:
                    writer.close()
    finally:
        if reader is not None:
            reader.close()
    metrics = {"mode": mode, "detector": detector, "frames": len(run.frames), "tiles_total": run.n_tiles,
               "tiles_per_frame": run.tiles_per_frame(), "macs_per_frame": run.macs_per_frame(), "fps": run.fps(),
               "interrupted": run.interrupted, "error": run.error}
    if gts:
        agnostic = tuple(det.class_names) != CLASS_NAMES  # another detector's classes: boxes only
        sc = evaluate_detections(gts[:len(run.frames)], [f.detections for f in run.frames],
                                 num_classes=len(det.class_names), class_agnostic=agnostic)
        metrics["class_agnostic"] = agnostic
        metrics.update({"recall": sc.recall, "precision": sc.precision, "ap50": sc.ap50})
    atomic_write_json(out_dir / "detections.json", {"mode": mode, "tiles": run.tiles.tolist(), "frames": [
        {"index": f.index, "tiles": f.processed.tolist(), "detections": f.detections.to_json()} for f in run.frames]})
    metrics = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    atomic_write_json(out_dir / "metrics.json", metrics)  # NaN (no detections: precision undefined) as null
    emit(metrics, as_json, title=f"detect {mode}")
    if run.error:
        raise DataError(f"{run.error}; the results of the {len(run.frames)} frames read are in {out_dir}")
    if run.interrupted:
        console.print(f"[yellow]interrupted[/]: results of {len(run.frames)} frames written to {out_dir}")
        raise typer.Exit(130)

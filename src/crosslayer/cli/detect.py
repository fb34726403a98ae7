"""``crosslayer detect VIDEO``: run a detector over a video as resize, all tiles or selective tile processing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import typer

from crosslayer.cli.common import DeviceOpt, JsonOpt, SeedOpt, console, emit, handle_errors, setup_logging


def _with_gt(source: Iterator[tuple[np.ndarray, Any]], sink: list[Any]) -> Iterator[np.ndarray]:
    """Frames of ``source``, appending each frame's ground truth to ``sink`` as it goes."""
    for frame, gt in source:
        sink.append(gt)
        yield frame


def register(app: typer.Typer) -> None:
    app.command("detect")(detect_cmd)


@handle_errors
def detect_cmd(
    video: str = typer.Argument(..., help="A video file, or 'synthetic' for a held-out synthetic 1920x1080 "
                                          "sequence with exact boxes (then recall / precision / AP are reported)."),
    mode: str = typer.Option("stp", "--mode", help="resize, tiles or stp."),
    detector: str = typer.Option("tiny", "--detector", help="tiny (trained here, cached), hog (OpenCV people "
                                                            "detector) or file.py:factory."),
    tile: int = typer.Option(384, "--tile", help="Tile (detector input) size in px."),
    overlap: int = typer.Option(64, "--overlap", help="Minimum overlap between tiles in px (> 0)."),
    budget: float = typer.Option(0.25, "--budget", help="STP: tiles per frame, a fraction in (0, 1) or a count."),
    max_frames: int = typer.Option(0, "--max-frames", help="Stop after N frames (0 = all)."),
    conf: float = typer.Option(0.5, "--conf", help="Tiny detector score threshold."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (detections.json, metrics.json)."),
    video_out: Path = typer.Option(None, "--video-out", help="Also write an annotated video (.avi or .mp4)."),
    seed: int = SeedOpt, device: str = DeviceOpt, as_json: bool = JsonOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Detect objects in VIDEO; writes per-frame detections and speed / tile figures (partial on Ctrl-C)."""
    setup_logging(verbose)
    from crosslayer.data.scenes import CLASS_NAMES, SceneConfig
    from crosslayer.data.video import VideoReader, VideoWriter
    from crosslayer.detect.factory import build_detector, synthetic_sequences
    from crosslayer.detect.metrics import evaluate_detections, relative_energy
    from crosslayer.detect.pipeline import MODES, FrameOutput, STPConfig, process_video
    from crosslayer.detect.plots import annotate_frame
    from crosslayer.errors import ConfigError
    from crosslayer.fileio import atomic_write_json, ensure_writable_dir

    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is not allowed; choose one of {', '.join(MODES)}")
    if max_frames < 0:
        raise ConfigError(f"--max-frames {max_frames} is not allowed; use 0 (all) or a positive count")
    cfg = STPConfig(min_overlap=overlap, budget=budget)
    cfg.validate()
    out_dir = ensure_writable_dir(out)
    det = build_detector(detector, tile=tile, conf_threshold=conf, seed=seed, device=device)
    gts: list[tuple[np.ndarray, np.ndarray]] = []
    frames: Iterator[np.ndarray]
    total: int | None
    if video == "synthetic":
        n = max_frames or 60
        make = synthetic_sequences(1, SceneConfig(num_frames=n), seed=seed)[0]
        frames, total, fps_in = _with_gt(make(), gts), n, 25.0
    else:
        reader = VideoReader(video, max_frames=max_frames)
        frames, total, fps_in = iter(reader), reader.frame_count or None, reader.fps
    writer: VideoWriter | None = None

    def on_frame(o: FrameOutput, frame: np.ndarray, tiles: np.ndarray) -> None:
        nonlocal writer
        if video_out is None:
            return
        if writer is None:
            w = min(frame.shape[1], 1280)
            writer = VideoWriter(video_out, fps_in, (w, round(frame.shape[0] * w / frame.shape[1])))
        writer.write(annotate_frame(frame, tiles, o.processed, o.detections, class_names=det.class_names))

    try:
        run = process_video(frames, det, mode, cfg, on_frame=on_frame, total=total,
                            desc=f"detect {mode}")
    finally:
        if writer is not None:
            writer.close()
    metrics = {"mode": mode, "detector": detector, "frames": len(run.frames), "tiles_total": run.n_tiles,
               "tiles_per_frame": run.tiles_per_frame(), "fps": run.fps(),
               "relative_energy_macs": relative_energy(run.tiles_per_frame(), det.macs_per_tile),
               "interrupted": run.interrupted}
    if gts:
        agnostic = tuple(det.class_names) != CLASS_NAMES  # another detector's classes: boxes only
        sc = evaluate_detections(gts[:len(run.frames)], [f.detections for f in run.frames],
                                 num_classes=len(det.class_names), class_agnostic=agnostic)
        metrics["class_agnostic"] = agnostic
        metrics.update({"recall": sc.recall, "precision": sc.precision, "ap50": sc.ap50})
    atomic_write_json(out_dir / "detections.json", {"mode": mode, "tiles": run.tiles.tolist(), "frames": [
        {"index": f.index, "tiles": f.processed.tolist(), "detections": f.detections.to_json()} for f in run.frames]})
    atomic_write_json(out_dir / "metrics.json", metrics)
    emit(metrics, as_json, title=f"detect {mode}")
    if run.interrupted:
        console.print(f"[yellow]interrupted[/]: results of {len(run.frames)} frames written to {out_dir}")
        raise typer.Exit(130)

"""``crosslayer detect VIDEO``: run a detector over a video as a resized frame, the whole frame, all tiles or
selective tile processing (a thin shell over :func:`crosslayer.detect.api.detect_video`)."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import typer

from crosslayer.cli.common import DeviceOpt, JsonOpt, SeedOpt, console, emit, handle_errors, setup_logging
from crosslayer.config import MAX_TILE


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
    from crosslayer.detect.api import DetectConfig, check_frame_size, detect_video, open_video
    from crosslayer.detect.factory import build_mode_detectors
    from crosslayer.detect.pipeline import MODES
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
    cfg = DetectConfig(mode=mode, tile=tile, min_overlap=overlap, budget=budget, max_frames=max_frames)
    out_dir = ensure_writable_dir(out)
    src = open_video(video, max_frames=max_frames, seed=seed)  # refuses oversized frames before decoding one
    try:
        check_frame_size(cfg, src.size, "--tile")
        det = build_mode_detectors(detector, (cfg.mode,), frame_size=src.size, tile=tile, conf_threshold=conf,
                                   seed=seed, device=device)[cfg.mode]
    except BaseException:
        src.close()
        raise
    with sigterm_as_interrupt():
        res = detect_video(det, cfg, src, video_out=video_out)
    run, metrics = res.run, {"detector": detector, **res.metrics()}
    metrics = {"mode": metrics.pop("mode"), **metrics}
    atomic_write_json(out_dir / "detections.json", res.detections_json())
    atomic_write_json(out_dir / "metrics.json", metrics)  # NaN (no detections: precision undefined) as null
    emit(metrics, as_json, title=f"detect {mode}")
    if run.error:
        raise DataError(f"{run.error}; the results of the {len(run.frames)} frames read are in {out_dir}")
    if run.interrupted:
        console.print(f"[yellow]interrupted[/]: results of {len(run.frames)} frames written to {out_dir}")
        raise typer.Exit(130)

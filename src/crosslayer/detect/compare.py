"""Resize vs. all tiles vs. Selective Tile Processing on the same frames, interleaved.

Every frame goes through each mode's own :class:`FrameProcessor` in a rotating order, so that the
three timings share the machine's state (caches, other load) and their ratio is fair; frames per
second come from the median per-frame time. Quality is measured against exact boxes (synthetic
sequences) or, for real video without annotations, against the all-tiles output of the same detector
(pseudo ground truth: the figures are then agreement with tiling, not accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crosslayer.detect.detections import Detections
from crosslayer.detect.detectors import Detector
from crosslayer.detect.metrics import evaluate_detections, relative_energy
from crosslayer.detect.pipeline import MODES, FrameOutput, FrameProcessor, Mode, STPConfig
from crosslayer.errors import ConfigError
from crosslayer.train import progress

__all__ = ["Comparison", "compare_modes"]

GroundTruth = tuple[NDArray[np.float32], NDArray[np.int64]]
Sequence_ = Iterable[tuple[NDArray[np.uint8], GroundTruth | None]]


@dataclass
class Comparison:
    """Per-mode metrics, the per-frame outputs, and the processors' tile grid."""

    metrics: dict[str, dict[str, Any]]
    outputs: dict[str, list[FrameOutput]]
    gt: list[GroundTruth]
    tiles: NDArray[np.int32]
    pseudo_gt: bool
    snapshots: list[tuple[NDArray[np.uint8], dict[str, FrameOutput], GroundTruth | None]] = field(default_factory=list)


def compare_modes(sequences: Sequence[Callable[[], Sequence_]], detector: Detector, cfg: STPConfig | None = None, *,
                  modes: tuple[Mode, ...] = MODES, energy_per_mac: float | None = None,
                  snapshot_frames: tuple[int, ...] = (), total_frames: int | None = None) -> Comparison:
    """Run ``modes`` over every sequence (each a callable yielding ``(frame, ground truth or None)``).

    Without ground truth the all-tiles output is the reference (``pseudo_gt``); ``modes`` must then
    include ``'tiles'``. ``snapshot_frames`` keeps copies of those frames of the first sequence for figures.
    """
    cfg = cfg or STPConfig()
    outputs: dict[str, list[FrameOutput]] = {m: [] for m in modes}
    gts: list[GroundTruth | None] = []
    snapshots: list[tuple[NDArray[np.uint8], dict[str, FrameOutput], GroundTruth | None]] = []
    tiles = np.zeros((0, 4), np.int32)
    with progress() as bar:
        task = bar.add_task("compare modes", total=total_frames, info="")
        for s, make in enumerate(sequences):
            procs: dict[str, FrameProcessor] = {}
            for i, (frame, gt) in enumerate(make()):
                if not procs:
                    size = (frame.shape[1], frame.shape[0])
                    procs = {m: FrameProcessor(detector, m, size, cfg) for m in modes}
                    tiles = procs[modes[-1]].tiles if "tiles" not in procs else procs["tiles"].tiles
                step: dict[str, FrameOutput] = {}
                for r in range(len(modes)):  # rotate the order every frame: fair interleaved timing
                    m = modes[(i + r) % len(modes)]
                    step[m] = procs[m].step(frame)
                for m in modes:
                    outputs[m].append(step[m])
                gts.append(gt)
                if s == 0 and i in snapshot_frames:
                    snapshots.append((frame.copy(), step, gt))
                bar.update(task, advance=1, info=f"sequence {s + 1}")
    pseudo = any(g is None for g in gts)
    if pseudo:
        if "tiles" not in outputs:
            raise ConfigError("without ground truth the 'tiles' mode is needed (pseudo ground truth); add it to modes")
        ref: list[GroundTruth] = [(o.detections.boxes, o.detections.classes) for o in outputs["tiles"]]
    else:
        ref = [g for g in gts if g is not None]
    ncls = len(detector.class_names)
    all_tiles = len(tiles)
    metrics: dict[str, dict[str, Any]] = {}
    for m in modes:
        outs = outputs[m]
        dets: list[Detections] = [o.detections for o in outs]
        sc = evaluate_detections(ref, dets, num_classes=ncls, class_agnostic=pseudo)
        tpf = float(np.mean([o.tiles_processed for o in outs])) if outs else 0.0
        med = float(np.median([o.seconds for o in outs])) if outs else float("nan")
        metrics[m] = {**sc.as_dict(), "fps": 1.0 / max(med, 1e-9), "median_frame_ms": 1000 * med,
                      "tiles_per_frame": tpf, "tile_fraction": tpf / max(all_tiles, 1) if m != "resize" else
                      1.0 / max(all_tiles, 1),
                      "energy_per_frame": relative_energy(tpf, detector.macs_per_tile, energy_per_mac),
                      "frames": len(outs)}
    if "tiles" in metrics:
        base = metrics["tiles"]["energy_per_frame"]
        for m in modes:
            metrics[m]["relative_energy"] = metrics[m]["energy_per_frame"] / base if base else float("nan")
    return Comparison(metrics, outputs, ref, tiles, pseudo, snapshots)

"""The modes (resize, full frame, all tiles, Selective Tile Processing) on the same frames, interleaved.

Every frame goes through each mode's own :class:`FrameProcessor` in a rotating order, so that the
timings share the machine's state (caches, other load) and their ratio is fair; frames per second come
from the median per-frame time, and compute from the detector's MACs on what each mode fed it. Each mode
may have its own detector (e.g. one trained at the scale of a resized frame). Quality is measured on the
frames that carry ground truth (exact boxes of synthetic sequences, or boxes checked by hand on a sample
of a real video's frames); when no frame has any, the all-tiles output of the same detector is the
reference (pseudo ground truth: the figures are then agreement with tiling, not accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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

__all__ = ["Comparison", "compare_modes", "score_outputs"]

GroundTruth = tuple[NDArray[np.float32], NDArray[np.int64]]
Sequence_ = Iterable[tuple[NDArray[np.uint8], GroundTruth | None]]


@dataclass
class Comparison:
    """Per-mode metrics, the per-frame outputs, the reference boxes of the scored frames (``scored``: their
    indices into each mode's outputs), and the processors' tile grid."""

    metrics: dict[str, dict[str, Any]]
    outputs: dict[str, list[FrameOutput]]
    gt: list[GroundTruth]
    tiles: NDArray[np.int32]
    pseudo_gt: bool
    scored: list[int] = field(default_factory=list)
    snapshots: list[tuple[NDArray[np.uint8], dict[str, FrameOutput], GroundTruth | None]] = field(default_factory=list)


def score_outputs(cmp: Comparison, mode: str, *, num_classes: int, min_score: float = 0.0) -> dict[str, Any]:
    """Quality of ``mode``'s output on the scored frames, keeping only detections scoring >= ``min_score``."""
    dets: list[Detections] = []
    for i in cmp.scored:
        d = cmp.outputs[mode][i].detections
        dets.append(d.take(d.scores >= min_score) if min_score > 0 else d)
    return evaluate_detections(cmp.gt, dets, num_classes=num_classes, class_agnostic=cmp.pseudo_gt).as_dict()


def compare_modes(sequences: Sequence[Callable[[], Sequence_]], detector: Detector | Mapping[str, Detector],
                  cfg: STPConfig | None = None, *, modes: tuple[Mode, ...] = MODES,
                  energy_per_mac: float | None = None, snapshot_frames: tuple[int, ...] = (),
                  total_frames: int | None = None) -> Comparison:
    """Run ``modes`` over every sequence (each a callable yielding ``(frame, ground truth or None)``).

    ``detector`` is one detector for every mode or one per mode. Frames whose ground truth is None are
    processed but not scored; when no frame has ground truth, the all-tiles output is the reference
    (``pseudo_gt``) and ``modes`` must include ``'tiles'``. ``snapshot_frames`` keeps copies of those frames
    of the first sequence for figures.
    """
    cfg = cfg or STPConfig()
    dets: dict[str, Detector] = {m: (detector[m] if isinstance(detector, Mapping) else detector) for m in modes}
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
                    procs = {m: FrameProcessor(dets[m], m, size, cfg) for m in modes}
                    grid = [procs[m].tiles for m in ("tiles", "stp") if m in procs]
                    tiles = grid[0] if grid else procs[modes[0]].tiles
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
    pseudo = all(g is None for g in gts)
    if pseudo:
        if "tiles" not in outputs:
            raise ConfigError("without ground truth the 'tiles' mode is needed (pseudo ground truth); add it to modes")
        scored = list(range(len(gts)))
        ref: list[GroundTruth] = [(o.detections.boxes, o.detections.classes) for o in outputs["tiles"]]
    else:
        scored = [i for i, g in enumerate(gts) if g is not None]
        ref = [g for g in gts if g is not None]
    cmp = Comparison({}, outputs, ref, tiles, pseudo, scored, snapshots)
    all_tiles = len(tiles)
    for m in modes:
        outs = outputs[m]
        ncls = len(dets[m].class_names)
        tpf = float(np.mean([o.tiles_processed for o in outs])) if outs else 0.0
        macs = float(np.mean([o.macs for o in outs])) if outs else 0.0
        med = float(np.median([o.seconds for o in outs])) if outs else float("nan")
        cmp.metrics[m] = {**score_outputs(cmp, m, num_classes=ncls), "fps": 1.0 / max(med, 1e-9),
                          "median_frame_ms": 1000 * med, "tiles_per_frame": tpf,
                          "tile_fraction": tpf / max(all_tiles, 1) if m in ("tiles", "stp") else float("nan"),
                          "macs_per_frame": macs, "energy_per_frame": relative_energy(1, int(macs), energy_per_mac),
                          "frames": len(outs), "frames_scored": len(scored),
                          "frame_ms": [round(1000 * o.seconds, 3) for o in outs]}
    if "tiles" in cmp.metrics:
        base = cmp.metrics["tiles"]["energy_per_frame"]
        for m in modes:
            cmp.metrics[m]["relative_energy"] = cmp.metrics[m]["energy_per_frame"] / base if base else float("nan")
    return cmp

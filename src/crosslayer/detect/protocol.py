"""The evaluation protocol of the mode comparison: every choice on validation sequences, fixed before the
held-out test sequences are run, and differences summarised over seeds.

1. Each mode's detector runs once on the validation sequences at a low candidate score; each stateless
   mode (resize, full frame, all tiles) gets the operating score threshold with the best F1 there (a
   threshold applied after decoding gives the same boxes as one applied during it: greedy NMS keeps a box
   only when no higher-scoring box suppresses it).
2. STP's own settings are searched one at a time on the same validation sequences (coordinate search,
   best F1; ties keep the earlier grid value): score threshold, memory length (``max_misses``: visits an
   unseen object survives), ``max_age`` (frames before a tile is forced in), the attention's motion
   threshold. The tile budget is a fixed input, not tuned. The detector's output on a tile is remembered
   by the tile's pixels (:class:`MemoDetector`), so the search replays what step 1 computed instead of
   running the detector again (the same boxes; only timing would differ, and validation times nothing).
3. The test sequences are run once with the choices, every mode interleaved frame by frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crosslayer.config import check_range
from crosslayer.detect.compare import Comparison, compare_modes, score_outputs
from crosslayer.detect.detections import Detections
from crosslayer.detect.detectors import Detector, ScoreFilter, at_threshold, pad_multiple, run_detector
from crosslayer.detect.pipeline import MODES, Mode, STPConfig
from crosslayer.errors import ConfigError

__all__ = ["Choices", "MemoDetector", "TuningGrid", "choose_on_validation", "run_test", "summarize_seeds"]

GroundTruth = tuple[NDArray[np.float32], NDArray[np.int64]]
Maker = Callable[[], Iterable[tuple[NDArray[np.uint8], GroundTruth | None]]]


@dataclass(frozen=True, kw_only=True)
class TuningGrid:
    """Values tried on validation: operating score thresholds, STP memory length, ``max_age``, motion threshold."""

    thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    max_misses: tuple[int, ...] = (0, 1, 2, 3)
    max_age: tuple[int, ...] = (5, 10, 20)
    motion_threshold: tuple[float, ...] = (10.0, 20.0, 40.0)
    candidate_threshold: float = 0.05

    def validate(self) -> None:
        if not (self.thresholds and self.max_misses and self.max_age and self.motion_threshold):
            raise ConfigError("every tuning grid needs at least one value")
        if not all(math.isfinite(v) for v in (self.candidate_threshold, *self.thresholds, *self.motion_threshold)):
            raise ConfigError("tuning thresholds must be finite numbers")
        check_range("candidate_threshold", self.candidate_threshold, 0.0, 1.0, lo_open=True, hi_open=True)
        for t in self.thresholds:
            check_range("thresholds", t, self.candidate_threshold, 1.0, hi_open=True)


@dataclass
class Choices:
    """What validation chose: per-mode score thresholds, STP's settings, and every value tried with its scores."""

    thresholds: dict[str, float]
    stp: STPConfig
    tried: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"thresholds": dict(self.thresholds),
                "stp": {k: getattr(self.stp, k) for k in ("max_misses", "max_age", "motion_threshold", "budget",
                                                          "min_overlap")},
                "tried": self.tried}


class MemoDetector:
    """``detector`` with its output remembered per tile content (a BLAKE2 digest of the pixels): a tile seen
    again is answered from memory. For replaying validation runs; never for timing."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.input_size = detector.input_size
        self.class_names = detector.class_names
        self.macs_per_tile = detector.macs_per_tile
        self.pad_multiple = pad_multiple(detector)
        if callable(getattr(detector, "macs_at", None)):
            self.macs_at = detector.macs_at  # type: ignore[attr-defined]
        self._memo: dict[bytes, Detections] = {}
        self.hits = 0

    def detect(self, tiles: NDArray[np.uint8]) -> list[Detections]:
        keys = [hashlib.blake2b(np.ascontiguousarray(t).data, digest_size=16,
                                person=repr(t.shape).encode()[:16]).digest() for t in tiles]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        if todo:
            for i, d in zip(todo, run_detector(self.detector, tiles[todo]), strict=True):
                self._memo[keys[i]] = d
        self.hits += len(keys) - len(todo)
        return [self._memo[k] for k in keys]


def _short(scores: Mapping[str, Any]) -> dict[str, float]:
    return {k: round(float(scores[k]), 4) for k in ("f1", "precision", "recall", "ap50")}


def choose_on_validation(sequences: Sequence[Maker], detectors: Mapping[str, Detector], cfg: STPConfig,
                         grid: TuningGrid | None = None, *, modes: tuple[Mode, ...] = MODES,
                         total_frames: int | None = None) -> Choices:
    """The protocol's steps 1 and 2 (module docstring) on validation ``sequences`` (with ground truth)."""
    grid = grid or TuningGrid()
    grid.validate()
    thresholds: dict[str, float] = {}
    tried: dict[str, list[dict[str, Any]]] = {}
    memos: dict[int, MemoDetector] = {}
    for d in detectors.values():  # one memory per distinct detector, at the candidate threshold
        memos.setdefault(id(d), MemoDetector(at_threshold(d, grid.candidate_threshold)))
    memo = {m: memos[id(detectors[m])] for m in modes}
    stateless = tuple(m for m in modes if m != "stp")
    if stateless:
        cmp = compare_modes(sequences, {m: memo[m] for m in stateless}, cfg, modes=stateless,
                            total_frames=total_frames)
        for m in stateless:
            ncls = len(detectors[m].class_names)
            rows = [{"threshold": t, **_short(score_outputs(cmp, m, num_classes=ncls, min_score=t))}
                    for t in grid.thresholds]
            best = max(range(len(rows)), key=lambda i: (rows[i]["f1"], -i))
            thresholds[m] = rows[best]["threshold"]
            tried[m] = rows
    if "stp" not in modes:
        return Choices(thresholds, cfg, tried)
    current = {"threshold": thresholds.get("tiles", 0.5), "max_misses": cfg.max_misses, "max_age": cfg.max_age,
               "motion_threshold": cfg.motion_threshold}
    seen: dict[tuple[Any, ...], dict[str, float]] = {}

    def run(setting: dict[str, Any]) -> dict[str, float]:
        key = tuple(setting.values())
        if key not in seen:
            stp_cfg = dataclasses.replace(cfg, max_misses=setting["max_misses"], max_age=setting["max_age"],
                                          motion_threshold=setting["motion_threshold"])
            c = compare_modes(sequences, {"stp": ScoreFilter(memo["stp"], setting["threshold"])}, stp_cfg,
                              modes=("stp",), total_frames=total_frames)
            seen[key] = _short(score_outputs(c, "stp", num_classes=len(detectors["stp"].class_names)))
        return seen[key]

    rows_stp: list[dict[str, Any]] = []
    for name, values in (("threshold", grid.thresholds), ("max_misses", grid.max_misses),
                         ("max_age", grid.max_age), ("motion_threshold", grid.motion_threshold)):
        scores = []
        for v in values:
            setting = {**current, name: v}
            scores.append(run(setting)["f1"])
            rows_stp.append({"searching": name, **setting, **run(setting)})
        current[name] = values[max(range(len(values)), key=lambda i: (scores[i], -i))]
    thresholds["stp"] = float(current["threshold"])
    tried["stp"] = rows_stp
    chosen = dataclasses.replace(cfg, max_misses=int(current["max_misses"]), max_age=int(current["max_age"]),
                                 motion_threshold=float(current["motion_threshold"]))
    return Choices(thresholds, chosen, tried)


def run_test(sequences: Sequence[Maker], detectors: Mapping[str, Detector], choices: Choices, *,
             modes: tuple[Mode, ...] = MODES, total_frames: int | None = None,
             snapshot_frames: tuple[int, ...] = (), energy_per_mac: float | None = None) -> Comparison:
    """Step 3: every mode at its chosen operating point on the test sequences, interleaved."""
    return compare_modes(sequences, {m: at_threshold(detectors[m], choices.thresholds[m]) for m in modes},
                         choices.stp, modes=modes, total_frames=total_frames, snapshot_frames=snapshot_frames,
                         energy_per_mac=energy_per_mac)


def _spread(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "per_seed": [float(x) for x in v]}


def summarize_seeds(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], *, keys: tuple[str, ...] = (
        "recall", "precision", "ap50", "f1", "fps", "macs_per_frame", "tiles_per_frame"),
        pairs: tuple[tuple[str, str], ...] = (("stp", "full_frame"), ("stp", "tiles"), ("full_frame", "tiles"),
                                              ("resize", "full_frame"))) -> dict[str, Any]:
    """Mean, sample standard deviation, min, max and the per-seed values of each mode's ``keys``, and the
    paired differences (percentage points) of the quality metrics for each ``pairs`` (a minus b, per seed)."""
    modes = [m for m in per_seed[0] if all(m in s for s in per_seed)]
    out: dict[str, Any] = {m: {k: _spread([s[m][k] for s in per_seed]) for k in keys} for m in modes}
    diffs: dict[str, Any] = {}
    for a, b in pairs:
        if a in modes and b in modes:
            diffs[f"{a}_minus_{b}"] = {k: _spread([100 * (s[a][k] - s[b][k]) for s in per_seed])
                                       for k in ("recall", "precision", "ap50", "f1")}
    out["differences_pp"] = diffs
    return out

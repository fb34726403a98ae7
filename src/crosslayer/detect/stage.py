"""Flow stage ``detect``: Selective Tile Processing vs. a whole frame at native resolution vs. all tiles vs. a
resized frame on held-out synthetic high-resolution sequences (Plastiras et al., ICDSC 2018; survey Sec. on
run-time optimisation, Fig. 6), with every setting chosen on validation sequences first (``protocol``).

Independent of the classifier the earlier stages optimise: it trains (or reuses from the cache) the tiny
grid detector at native scale and, for the 'resize' mode, at the resized frame's scale. Reads
``ctx.artifacts["hw_energy_per_mac"]`` (hardware stage) for the energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from crosslayer.config import Config, check_range
from crosslayer.data.scenes import CLASS_NAMES, SceneConfig
from crosslayer.detect.factory import build_mode_detectors, synthetic_sequences
from crosslayer.detect.pipeline import MODES, STPConfig
from crosslayer.detect.plots import annotate_frame, fig6_figure, frame_strip_figure
from crosslayer.detect.protocol import TuningGrid, choose_on_validation, run_test
from crosslayer.detect.trainer import DetectorTrainConfig
from crosslayer.errors import ConfigError
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage

__all__ = ["DetectStageConfig"]


@dataclass(frozen=True, kw_only=True)
class DetectStageConfig(Config):
    """Validation and held-out test sequences (count, frames, objects and their sizes), tile size, overlap
    (0: the largest object size, so every object lies whole in one tile), STP budget, the detectors' training."""

    detector: Literal["tiny"] = "tiny"
    sequences: int = 2
    frames: int = 40
    val_sequences: int = 2
    val_frames: int = 30
    width: int = 1920
    height: int = 1080
    num_objects: int = 12
    min_size: int = 12
    max_size: int = 128
    tile: int = 384
    min_overlap: int = 0
    budget: float = 0.25
    train_crops: int = 4000
    train_epochs: int = 14
    use_cache: bool = True

    def validate(self) -> None:
        check_range("detect.sequences", self.sequences, 1, 1000)
        check_range("detect.frames", self.frames, 2, 100_000)
        check_range("detect.val_sequences", self.val_sequences, 1, 1000)
        check_range("detect.val_frames", self.val_frames, 2, 100_000)
        self.scene(self.frames).validate()
        check_range("detect.tile", self.tile, 32, min(self.width, self.height))
        check_range("detect.min_overlap", self.min_overlap, 0, self.tile - 1)
        if not 0 < self.budget < math.inf:
            raise ConfigError(f"detect.budget = {self.budget} is not allowed; use a fraction in (0, 1) or a count")
        self.train_config().validate()

    def train_config(self) -> DetectorTrainConfig:
        """The native-scale detector's training: the scenes' object sizes, crops of twice the largest object."""
        crop = max(128, 32 * math.ceil(self.max_size / 16))
        return DetectorTrainConfig(crops=self.train_crops, epochs=self.train_epochs, min_size=self.min_size,
                                   max_size=self.max_size, crop_size=crop)

    def scene(self, frames: int) -> SceneConfig:
        return SceneConfig(width=self.width, height=self.height, num_frames=frames, num_objects=self.num_objects,
                           min_size=self.min_size, max_size=self.max_size)

    def overlap(self) -> int:
        return self.min_overlap or min(self.max_size, self.tile - 1)


@register_stage("detect", DetectStageConfig, "selective tile processing vs full frame vs all tiles vs resize on "
                                             "synthetic video",
                needs_model=False)
def detect_stage(ctx: StageContext, cfg: DetectStageConfig) -> StageResult:
    rep = Report("detect")
    size = (cfg.width, cfg.height)
    detectors = build_mode_detectors(cfg.detector, MODES, frame_size=size, tile=cfg.tile, seed=ctx.seed,
                                     train_cfg=cfg.train_config(),
                                     device=str(ctx.device), use_cache=cfg.use_cache)
    energy_per_mac = ctx.artifacts.get("hw_energy_per_mac")
    if energy_per_mac is None:
        rep.notes.append("no hw_energy_per_mac artifact (hardware stage not run): energy is in MACs")
    else:
        rep.notes.append(f"energy = detector MACs per frame x hw_energy_per_mac ({float(energy_per_mac):.4g})")
    base = STPConfig(min_overlap=cfg.overlap(), budget=cfg.budget)
    choices = choose_on_validation(synthetic_sequences(cfg.val_sequences, cfg.scene(cfg.val_frames), seed=ctx.seed,
                                                       split="val"), detectors, base, TuningGrid(),
                                   total_frames=cfg.val_sequences * cfg.val_frames)
    snaps = (0, cfg.frames // 3, 2 * cfg.frames // 3, cfg.frames - 1)
    cmp = run_test(synthetic_sequences(cfg.sequences, cfg.scene(cfg.frames), seed=ctx.seed), detectors, choices,
                   total_frames=cfg.sequences * cfg.frames, snapshot_frames=snaps,
                   energy_per_mac=None if energy_per_mac is None else float(energy_per_mac))
    m = cmp.metrics
    for mode in MODES:
        for key in ("recall", "precision", "ap50", "fps", "tiles_per_frame", "macs_per_frame", "relative_energy"):
            rep.metrics[f"{mode}_{key}"] = m[mode][key]
        rep.metrics[f"{mode}_score_threshold"] = choices.thresholds[mode]
    ff = m["full_frame"]
    rep.metrics.update({
        "stp_tile_fraction": m["stp"]["tile_fraction"], "tiles_total": len(cmp.tiles),
        "stp_macs_vs_full_frame": m["stp"]["macs_per_frame"] / ff["macs_per_frame"],
        "stp_speedup_vs_full_frame": m["stp"]["fps"] / max(ff["fps"], 1e-9),
        "stp_speedup_vs_tiles": m["stp"]["fps"] / max(m["tiles"]["fps"], 1e-9),
        "stp_recall_minus_full_frame_pp": 100 * (m["stp"]["recall"] - ff["recall"]),
        "stp_recall_minus_tiles_pp": 100 * (m["stp"]["recall"] - m["tiles"]["recall"]),
        "stp_recall_minus_resize_pp": 100 * (m["stp"]["recall"] - m["resize"]["recall"]),
        "stp_max_misses": choices.stp.max_misses, "stp_max_age": choices.stp.max_age,
        "stp_motion_threshold": choices.stp.motion_threshold, "frames": cfg.sequences * cfg.frames,
    })
    rep.add_table(f"Modes on held-out synthetic {cfg.width}x{cfg.height} sequences (settings chosen on validation)",
                  ["mode", "recall", "precision", "AP@0.5", "FPS", "tiles / frame", "GMACs / frame",
                   "recall small / medium / large"],
                  [[mode, m[mode]["recall"], m[mode]["precision"], m[mode]["ap50"], m[mode]["fps"],
                    m[mode]["tiles_per_frame"], m[mode]["macs_per_frame"] / 1e9,
                    " / ".join(f"{m[mode]['recall_by_size'].get(k, float('nan')):.2f}"
                               for k in ("small", "medium", "large"))] for mode in MODES])
    rep.figures.append(fig6_figure(m, title="Accuracy, speed and compute per mode (cf. survey Fig. 6)",
                                   caption="FPS from median per-frame time (frame generation excluded), modes "
                                           "interleaved; resize uses a detector trained at the resized scale."))
    if cmp.snapshots:
        images, titles = [], []
        for frame, step, gt in cmp.snapshots:
            out = step["stp"]
            images.append(annotate_frame(frame, cmp.tiles, out.processed, out.detections, gt,
                                         class_names=CLASS_NAMES, width=960))
            titles.append(f"frame {out.index}: {out.tiles_processed}/{len(cmp.tiles)} tiles processed, "
                          f"{len(out.detections)} objects")
        rep.figures.append(frame_strip_figure(images, titles, title="STP frame strip",
                                              caption="Green: tiles processed this frame; white: ground truth; "
                                                      "coloured: STP output (processed + remembered)."))
    rep.notes.append(f"{len(cmp.tiles)} tiles of {cfg.tile}x{cfg.tile} px per {cfg.width}x{cfg.height} frame "
                     f"(min overlap {cfg.overlap()} px); STP budget {cfg.budget} plus every tile on the first frame; "
                     f"score thresholds and STP settings chosen on {cfg.val_sequences} validation sequences")
    return StageResult(report=rep)

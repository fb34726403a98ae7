"""Flow stage ``detect``: Selective Tile Processing vs. resize vs. all tiles on held-out synthetic
high-resolution sequences (Plastiras et al., ICDSC 2018; survey Sec. on run-time optimisation, Fig. 6).

Independent of the classifier the earlier stages optimise: it trains (or reuses from the cache) the
tiny grid detector. Reads ``ctx.artifacts["hw_energy_per_mac"]`` (hardware stage) for the energy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crosslayer.config import Config, check_range
from crosslayer.data.scenes import CLASS_NAMES, SceneConfig
from crosslayer.detect.attention import AttentionWeights
from crosslayer.detect.compare import compare_modes
from crosslayer.detect.factory import build_detector, synthetic_sequences
from crosslayer.detect.pipeline import MODES, STPConfig
from crosslayer.detect.plots import annotate_frame, fig6_figure, frame_strip_figure
from crosslayer.detect.trainer import DetectorTrainConfig
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage

__all__ = ["DetectStageConfig"]


@dataclass(frozen=True, kw_only=True)
class DetectStageConfig(Config):
    """Held-out sequences (count, frames, objects), tile size and STP settings, the tiny detector's training."""

    detector: Literal["tiny"] = "tiny"
    sequences: int = 2
    frames: int = 40
    width: int = 1920
    height: int = 1080
    num_objects: int = 10
    tile: int = 384
    min_overlap: int = 64
    budget: float = 0.25
    max_age: int = 10
    use_motion: bool = True
    conf_threshold: float = 0.5
    train_crops: int = 4000
    train_epochs: int = 14
    use_cache: bool = True

    def validate(self) -> None:
        check_range("detect.sequences", self.sequences, 1)
        check_range("detect.frames", self.frames, 2)
        check_range("detect.num_objects", self.num_objects, 1)
        check_range("detect.width", self.width, 64)
        check_range("detect.height", self.height, 64)
        check_range("detect.tile", self.tile, 32, min(self.width, self.height))
        check_range("detect.min_overlap", self.min_overlap, 1, self.tile - 1)
        check_range("detect.budget", self.budget, 0.0, lo_open=True)
        check_range("detect.max_age", self.max_age, 0)
        check_range("detect.conf_threshold", self.conf_threshold, 0.0, 1.0, lo_open=True, hi_open=True)
        DetectorTrainConfig(crops=self.train_crops, epochs=self.train_epochs).validate()


@register_stage("detect", DetectStageConfig, "selective tile processing vs resize vs all tiles on synthetic video",
                needs_model=False)
def detect_stage(ctx: StageContext, cfg: DetectStageConfig) -> StageResult:
    rep = Report("detect")
    detector = build_detector(cfg.detector, tile=cfg.tile, conf_threshold=cfg.conf_threshold, seed=ctx.seed,
                              train_cfg=DetectorTrainConfig(crops=cfg.train_crops, epochs=cfg.train_epochs),
                              device=str(ctx.device), use_cache=cfg.use_cache)
    energy_per_mac = ctx.artifacts.get("hw_energy_per_mac")
    if energy_per_mac is None:
        rep.notes.append("no hw_energy_per_mac artifact (hardware stage not run): energy is in MACs "
                         "(tiles processed x detector MACs per tile)")
    else:
        rep.notes.append(f"energy = tiles x detector MACs per tile x hw_energy_per_mac ({float(energy_per_mac):.4g})")
    stp = STPConfig(min_overlap=cfg.min_overlap, budget=cfg.budget, max_age=cfg.max_age, use_motion=cfg.use_motion,
                    weights=AttentionWeights())
    scene = SceneConfig(width=cfg.width, height=cfg.height, num_frames=cfg.frames, num_objects=cfg.num_objects)
    snaps = (0, cfg.frames // 3, 2 * cfg.frames // 3, cfg.frames - 1)
    cmp = compare_modes(synthetic_sequences(cfg.sequences, scene, seed=ctx.seed), detector, stp,
                        energy_per_mac=None if energy_per_mac is None else float(energy_per_mac),
                        snapshot_frames=snaps, total_frames=cfg.sequences * cfg.frames)
    m = cmp.metrics
    for mode in MODES:
        for key in ("recall", "precision", "ap50", "fps", "tiles_per_frame", "relative_energy"):
            rep.metrics[f"{mode}_{key}"] = m[mode][key]
    rep.metrics.update({
        "stp_tile_fraction": m["stp"]["tile_fraction"], "tiles_total": len(cmp.tiles),
        "stp_speedup_vs_tiles": m["stp"]["fps"] / max(m["tiles"]["fps"], 1e-9),
        "stp_recall_gain_vs_resize_pp": 100 * (m["stp"]["recall"] - m["resize"]["recall"]),
        "stp_recall_loss_vs_tiles_pp": 100 * (m["tiles"]["recall"] - m["stp"]["recall"]),
        "detector_macs_per_tile": detector.macs_per_tile, "frames": cfg.sequences * cfg.frames,
    })
    rep.add_table(f"Resize vs. all tiles vs. STP (held-out synthetic {cfg.width}x{cfg.height} sequences)",
                  ["mode", "recall", "precision", "AP@0.5", "FPS", "tiles / frame", "relative energy"],
                  [[mode, m[mode]["recall"], m[mode]["precision"], m[mode]["ap50"], m[mode]["fps"],
                    m[mode]["tiles_per_frame"], m[mode]["relative_energy"]] for mode in MODES])
    rep.figures.append(fig6_figure(m, title="Accuracy, speed and energy per mode (cf. survey Fig. 6)",
                                   caption="Same tiny detector in every mode; FPS from median per-frame time "
                                           "(frame generation excluded), interleaved."))
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
                     f"(min overlap {cfg.min_overlap} px); STP budget {cfg.budget} plus every tile on the first frame")
    return StageResult(report=rep)

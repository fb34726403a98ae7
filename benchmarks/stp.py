"""Selective Tile Processing vs. a whole frame at native resolution vs. all tiles vs. a resized frame, measured
on this machine, with every setting chosen on validation sequences before the test sequences are run.

1. Synthetic 1920x1080 sequences (``crosslayer.data.scenes``): objects 12-128 px, log-uniform (41 % COCO-small,
   46 % medium, 12 % large). Detectors: the tiny grid detector trained at native scale (tiles, STP, whole
   frame: all three feed it frame pixels 1:1) and one trained at the resized frame's scale (x0.2, for
   'resize'): each mode's detector has seen in training the object sizes its mode feeds it. Tiles of
   384 px overlapping by >= 128 px (the largest object: every object lies whole inside the tile whose core
   holds its centre), 28 tiles per frame; STP budget 25 % of the tiles. Per seed (detector training seed and
   scene seeds): score thresholds of every mode and STP's memory / attention settings chosen on 3 validation
   sequences (disjoint backgrounds), then 4 test sequences x 60 frames scored once (``detect.protocol``).
   Reported: recall, precision, AP@0.5 (pycocotools, on each mode's output at its operating threshold), recall
   per COCO size, FPS (median per-frame time, modes interleaved frame by frame, one thread, frame generation
   excluded), detector MACs per frame, tiles per frame; means and spreads over the seeds and paired
   differences (percentage points) per seed.
2. vtest.avi (768x576, 795 frames, OpenCV's HOG people detector): boxes checked by hand on a sample of frames
   (benchmarks/stp_vtest_gt.json states the method). Frames before the split are validation (choices),
   frames after it are the test.

Usage: .venv/bin/python benchmarks/stp.py [--seeds 0 1 2] [--resume] [--skip-vtest] [--skip-sahi]
Writes benchmarks/results/stp.json (per-seed parts under benchmarks/.work/stp/ so a run can be split: --resume).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from _common import ROOT, SHARED_DATA, WORK, peak_rss_mb, write_results
from crosslayer.data.scenes import SceneConfig
from crosslayer.data.video import VideoReader
from crosslayer.detect.detectors import HOGPeopleDetector
from crosslayer.detect.factory import build_mode_detectors, mode_scale, resize_train_config, synthetic_sequences
from crosslayer.detect.pipeline import MODES, STPConfig
from crosslayer.detect.protocol import TuningGrid, choose_on_validation, run_test, summarize_seeds
from crosslayer.detect.trainer import DetectorTrainConfig, train_tiny_detector
from crosslayer.fileio import atomic_write_json

GT_FILE = ROOT / "benchmarks" / "stp_vtest_gt.json"
PARTS = WORK / "stp"
KEYS = ("recall", "precision", "ap50", "f1", "fps", "median_frame_ms", "tiles_per_frame", "tile_fraction",
        "macs_per_frame", "relative_energy", "recall_by_size", "n_gt_by_size", "n_gt", "n_det", "frames",
        "frames_scored", "frame_ms")
SAHI_CASES = ((1920, 1080, 384, 128), (1920, 1080, 384, 64), (3840, 2160, 512, 64), (768, 576, 256, 64))
SAHI_SCRIPT = """
import json, sys
from sahi.slicing import get_slice_bboxes
out = []
for w, h, t, o in json.loads(sys.argv[1]):
    out.append(get_slice_bboxes(h, w, slice_height=t, slice_width=t, overlap_height_ratio=o / t,
                                overlap_width_ratio=o / t))
print(json.dumps(out))
"""


def _overlaps(boxes: list[list[int]]) -> dict[str, list[int]]:
    """[min, max] overlap (px) between neighbouring tiles along x and along y."""
    t = boxes[0][2] - boxes[0][0]
    out = {}
    for axis, k in (("x", 0), ("y", 1)):
        starts = sorted({b[k] for b in boxes})
        ov = [t - (b - a) for a, b in itertools.pairwise(starts)] or [0]
        out[axis] = [min(ov), max(ov)]
    return out


def sahi_slicing() -> dict[str, object]:
    """Our uniform tile grid vs. SAHI's ``get_slice_bboxes`` (installed in its own venv), same sizes."""
    import subprocess

    from _common import peer_venv
    from crosslayer.detect.tiling import tile_grid

    try:
        py = peer_venv("sahi", ["sahi", "shapely", "pillow", "pybboxes", "tqdm", "requests", "fire", "terminaltables",
                                "click", "opencv-python-headless<5", "numpy", "pyyaml"], pip_args=["--no-deps"])
        res = subprocess.run([str(py), "-c", SAHI_SCRIPT, json.dumps(SAHI_CASES)], check=True, capture_output=True,
                             text=True, timeout=300)
        theirs = json.loads(res.stdout.strip().splitlines()[-1])
        version = subprocess.run([str(py), "-c", "import sahi; print(sahi.__version__)"], capture_output=True,
                                 text=True).stdout.strip()
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        return {"skipped": f"SAHI could not be installed or run: {exc}"}
    rows = []
    for (w, h, t, o), sb in zip(SAHI_CASES, theirs, strict=True):
        ours = tile_grid(w, h, t, t, o).tolist()
        rows.append({"frame": [w, h], "tile": t, "min_overlap": o, "ours_tiles": len(ours), "sahi_tiles": len(sb),
                     "ours_overlap_px": _overlaps(ours), "sahi_overlap_px": _overlaps(sb)})
    return {"sahi_version": version, "cases": rows,
            "note": "SAHI steps by (tile - overlap) and shifts the last tile back inside the frame (one much "
                    "larger overlap); ours spreads the same number of tiles uniformly (constant overlap per axis, "
                    "+-1 px rounding)"}


def _finite(obj: Any) -> Any:
    """``obj`` with NaN / infinity (an undefined precision, a tile fraction of a tile-less mode) as None: JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _mode_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return _finite({m: {k: metrics[m][k] for k in KEYS if k in metrics[m]} for m in metrics})


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) the detectors of ``seed``, choose on validation, score the test sequences once."""
    size = (1920, 1080)
    train_cfg = DetectorTrainConfig()
    t0 = time.perf_counter()
    detectors = build_mode_detectors("tiny", MODES, frame_size=size, tile=args.tile, seed=seed, device="cpu")
    trained = {}
    for name, mode in (("native", "tiles"), ("resize", "resize")):
        cfg = resize_train_config(train_cfg, mode_scale(mode, args.tile, size))
        t = train_tiny_detector(cfg, seed=seed)  # from the cache just filled
        trained[name] = {"train_seconds": t.train_seconds, "final_loss": t.final_loss,
                         "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                         "macs_per_tile": detectors[mode].macs_per_tile}
    scene = SceneConfig(num_frames=args.frames)
    base = STPConfig(min_overlap=scene.max_size, budget=args.budget)
    t1 = time.perf_counter()
    choices = choose_on_validation(
        synthetic_sequences(args.val_sequences, SceneConfig(num_frames=args.val_frames), seed=seed, split="val"),
        detectors, base, TuningGrid(), total_frames=args.val_sequences * args.val_frames)
    t2 = time.perf_counter()
    cmp = run_test(synthetic_sequences(args.sequences, scene, seed=seed), detectors, choices,
                   total_frames=args.sequences * args.frames)
    t3 = time.perf_counter()
    return {"seed": seed, "modes": _mode_metrics(cmp.metrics), "choices": choices.as_dict(), "detectors": trained,
            "tiles_total": len(cmp.tiles), "seconds": {"detectors": t1 - t0, "validation": t2 - t1, "test": t3 - t2}}


def _vtest_segment(path: Path, k: int, context: int, boxes: list[list[float]]
                   ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]]:
    """Frames ``k - context`` .. ``k`` of the video; only frame ``k`` carries (hand-checked) ground truth."""
    with VideoReader(path, max_frames=k + 1) as r:
        for i, frame in enumerate(r):
            if i >= k - context:
                yield frame, (np.asarray(boxes, np.float32).reshape(-1, 4), np.zeros(len(boxes), np.int64)) \
                    if i == k else None


def choose_hog_upscale(video: Path, frames: dict[int, list[list[float]]], tile: int) -> dict[str, Any]:
    """HOG's upscale on the validation frames (whole frame, best-F1 threshold): the cheapest of 1, 1.5 and 2
    whose recall reaches 0.7 (HOG's smallest person is 96 px / upscale; most vtest people are 60-100 px)."""
    from crosslayer.detect.detectors import run_detector
    from crosslayer.detect.metrics import evaluate_detections

    with VideoReader(video, max_frames=max(frames) + 1) as r:
        images = {i: f for i, f in enumerate(r) if i in frames}
    gt = [(np.asarray(frames[k], np.float32), np.zeros(len(frames[k]), np.int64)) for k in sorted(frames)]
    rows = []
    for up in (1.0, 1.5, 2.0):
        hog = HOGPeopleDetector(input_size=(tile, tile), upscale=up)
        dets = [run_detector(hog, images[k][None])[0] for k in sorted(frames)]
        scores, t = max(((evaluate_detections(gt, [d.take(d.scores >= t) for d in dets], num_classes=1), t)
                         for t in TuningGrid().thresholds), key=lambda st: st[0].f1)
        rows.append({"upscale": up, "threshold": t, "recall": scores.recall, "precision": scores.precision,
                     "f1": scores.f1, "macs_full_frame": hog.macs_at(768, 576)})
    ok = [r for r in rows if r["recall"] >= 0.7]
    chosen = min(ok, key=lambda r: r["macs_full_frame"]) if ok else max(rows, key=lambda r: r["f1"])
    return {"chosen": chosen["upscale"], "rule": "cheapest with recall >= 0.7 on the validation frames (whole "
            "frame, threshold of best F1); else best F1", "tried": rows}


def run_vtest(args: argparse.Namespace) -> dict[str, Any]:
    """HOG on vtest.avi: every choice on the validation frames' hand-checked boxes, scored on the test frames'.
    Each annotated frame k is the last of a segment k - context .. k (STP starts afresh on each segment)."""
    video = SHARED_DATA / "video" / "vtest.avi"
    if not video.is_file() or not GT_FILE.is_file():
        return {"skipped": f"needs {video} and {GT_FILE}"}
    gt = json.loads(GT_FILE.read_text())
    boxes = {int(k): v for k, v in gt["frames"].items()}
    split, ctx = int(gt["split_frame"]), args.vtest_context
    val_k = sorted(k for k in boxes if k < split)
    test_k = sorted(k for k in boxes if k >= split)
    t0 = time.perf_counter()
    upscale = choose_hog_upscale(video, {k: boxes[k] for k in val_k}, args.vtest_tile)
    hog = HOGPeopleDetector(input_size=(args.vtest_tile, args.vtest_tile), upscale=upscale["chosen"])
    detectors = {m: hog for m in MODES}
    base = STPConfig(min_overlap=int(gt["overlap_px"]), budget=args.budget)

    def segments(ks: list[int]) -> list[Any]:
        return [lambda k=k: _vtest_segment(video, k, ctx, boxes[k]) for k in ks]

    choices = choose_on_validation(segments(val_k), detectors, base, TuningGrid(), total_frames=len(val_k) * (ctx + 1))
    t1 = time.perf_counter()
    cmp = run_test(segments(test_k), detectors, choices, total_frames=len(test_k) * (ctx + 1))
    m = cmp.metrics
    return {"ground_truth": {"file": str(GT_FILE.relative_to(ROOT)), "method": gt["method"],
                             "validation_frames": val_k, "test_frames": test_k,
                             "boxes_validation": sum(len(boxes[k]) for k in val_k),
                             "boxes_test": sum(len(boxes[k]) for k in test_k)},
            "note": "accuracy against hand-checked boxes on the test frames (not agreement between modes); each "
                    f"annotated frame ends a segment of {ctx + 1} frames that every mode processes",
            "frame_size": [768, 576], "tile": args.vtest_tile, "min_overlap": base.min_overlap,
            "tiles_total": len(cmp.tiles), "context_frames": ctx,
            "detector": {"name": "OpenCV HOG people detector (Dalal & Triggs), person box", "upscale": upscale},
            "modes": _mode_metrics(m), "choices": choices.as_dict(),
            "stp_macs_vs_full_frame": m["stp"]["macs_per_frame"] / m["full_frame"]["macs_per_frame"],
            "seconds": {"validation": t1 - t0, "test": time.perf_counter() - t1}}


DOC = ROOT / "docs" / "detect.md"
LABELS = {"resize": "resize (letterbox)", "full_frame": "full frame", "tiles": "all tiles", "stp": "STP"}


def _pm(summary: dict[str, Any], key: str, fmt: str = ".3f") -> str:
    return f"{summary[key]:{fmt}} ± {summary[key + '_std']:{fmt}}"


def render_doc(res: dict[str, Any]) -> dict[str, str]:
    """The results sections of docs/detect.md, from a results file (so the doc cannot drift from it)."""
    seeds = ", ".join(map(str, res["seeds"]))
    syn = res["synthetic"]
    lines = ["### Results: synthetic 1920x1080 sequences", "",
             f"Measured here (`benchmarks/results/stp.json`; seeds {seeds}, each with its own detectors, choices "
             f"and {syn['sequences']} test sequences x {syn['frames_per_sequence']} frames; mean ± standard "
             "deviation over the seeds):", "",
             "| mode | recall | precision | AP@0.5 | recall small / medium / large | FPS | tiles / frame | "
             "GMACs / frame |", "|---|---|---|---|---|---|---|---|"]
    for m in MODES:
        r = res[m]
        size = " / ".join(f"{r['recall_by_size'][k]:.2f}" for k in ("small", "medium", "large"))
        lines.append(f"| {LABELS[m]} | {_pm(r, 'recall')} | {_pm(r, 'precision')} | {_pm(r, 'ap50')} | {size} | "
                     f"{_pm(r, 'fps', '.1f')} | {r['tiles_per_frame']:.2f} | {r['macs_per_frame'] / 1e9:.3f} |")
    lines += ["", "Paired differences in percentage points (per seed, then mean ± standard deviation [min, max]):", "",
              "| | recall | precision | AP@0.5 | F1 |", "|---|---|---|---|---|"]
    for name, d in res["differences_pp"].items():
        a, b = name.split("_minus_")
        cells = [f"{d[k]['mean']:+.1f} ± {d[k]['std']:.1f} [{d[k]['min']:+.1f}, {d[k]['max']:+.1f}]"
                 for k in ("recall", "precision", "ap50", "f1")]
        lines.append(f"| {LABELS[a]} − {LABELS[b]} | " + " | ".join(cells) + " |")
    ch = [r["choices"] for r in res["per_seed"]]
    lines += ["", f"STP ran the detector on {100 * res['stp']['tiles_per_frame'] / res['tiles_total']:.1f} % of the "
              f"{res['tiles_total']} tiles per frame: {100 * res['stp_macs_vs_full_frame']:.1f} % of the full "
              f"frame's MACs (`stp_macs_vs_full_frame`) and {100 * res['stp_macs_vs_tiles']:.1f} % of all tiles', "
              f"at {res['stp_fps_vs_full_frame']:.2f}x the frame rate of the full frame and "
              f"{res['stp_fps_vs_tiles']:.2f}x that of all tiles (means of the per-seed ratios). Chosen on "
              "validation, per seed: score thresholds "
              + "; ".join(", ".join(f"{LABELS[m]} {c['thresholds'][m]}" for m in MODES) for c in ch)
              + "; STP max_misses / max_age / motion threshold "
              + ", ".join(f"{c['stp']['max_misses']} / {c['stp']['max_age']} / {c['stp']['motion_threshold']:g}"
                          for c in ch) + "."]
    out = {"synthetic": "\n".join(lines)}
    v = res.get("vtest")
    if v and "modes" in v:
        g = v["ground_truth"]
        up = v["detector"]["upscale"]
        vl = ["### Results: vtest.avi (real video, hand-checked boxes)", "",
              f"OpenCV's HOG people detector (person boxes, upscale {up['chosen']:g} chosen on the validation frames: "
              f"{up['rule']}), {v['tile']}-px tiles overlapping by >= {v['min_overlap']} px ({v['tiles_total']} "
              f"tiles). Accuracy against the boxes of `{g['file']}` ({g['boxes_test']} people on test frames "
              f"{', '.join(map(str, g['test_frames']))}; choices on {g['boxes_validation']} people on validation "
              f"frames {', '.join(map(str, g['validation_frames']))}); each annotated frame ends a segment of "
              f"{v['context_frames'] + 1} frames that every mode processes, STP starting afresh on each:", "",
              "| mode | recall | precision | AP@0.5 | FPS | tiles / frame | GMACs / frame |",
              "|---|---|---|---|---|---|---|"]
        for m in MODES:
            r = v["modes"][m]
            prec = "-" if r["precision"] is None else f"{r['precision']:.3f}"
            vl.append(f"| {LABELS[m]} | {r['recall']:.3f} | {prec} | {r['ap50']:.3f} | {r['fps']:.2f} | "
                      f"{r['tiles_per_frame']:.2f} | {r['macs_per_frame'] / 1e9:.3f} |")
        vl += ["", f"One run (HOG has no training seed), {g['boxes_test']} test boxes: differences of a few points are "
               f"within its noise. STP used {100 * v['stp_macs_vs_full_frame']:.1f} % of the full frame's MACs. The "
               "resized frame (x1/3) shrinks vtest's 30-140 px people below HOG's smallest (96 px / upscale), so "
               "'resize' finds none with this detector: a limit of the detector on this video, not a tuned baseline."]
        out["vtest"] = "\n".join(vl)
    return out


def write_doc(res: dict[str, Any], doc: Path = DOC) -> str:
    """``doc`` with its results sections (between ``<!-- stp:NAME -->`` markers) rendered from ``res``."""
    text = doc.read_text()
    for name, body in render_doc(res).items():
        start, end = f"<!-- stp:{name} -->", f"<!-- /stp:{name} -->"
        i, j = text.index(start) + len(start), text.index(end)
        text = text[:i] + "\n" + body + "\n" + text[j:]
    return text


SEED_ARGS = ("sequences", "frames", "val_sequences", "val_frames", "tile", "budget")


def _seed_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a seed's part depends on (a part is reused by --resume only when they match)."""
    return {k: getattr(args, k) for k in SEED_ARGS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--val-sequences", type=int, default=3)
    ap.add_argument("--val-frames", type=int, default=40)
    ap.add_argument("--tile", type=int, default=384)
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--vtest-tile", type=int, default=256)
    ap.add_argument("--vtest-context", type=int, default=10, help="frames before each annotated vtest frame")
    ap.add_argument("--resume", action="store_true", help="reuse per-seed parts of an earlier run with these settings")
    ap.add_argument("--only-seeds", action="store_true", help="run the seeds' parts and stop (split a long run)")
    ap.add_argument("--skip-vtest", action="store_true")
    ap.add_argument("--skip-sahi", action="store_true")
    ap.add_argument("--write-doc", action="store_true", help="only rewrite docs/detect.md's results sections from "
                                                             "benchmarks/results/stp.json")
    args = ap.parse_args()
    if args.write_doc:
        from crosslayer.fileio import atomic_write_text

        atomic_write_text(DOC, write_doc(json.loads((ROOT / "benchmarks" / "results" / "stp.json").read_text())))
        return
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    seeds = []
    for seed in args.seeds:
        part = PARTS / f"seed-{seed}.json"
        if args.resume and part.is_file():
            old = json.loads(part.read_text())
            if old.get("args") == _seed_args(args):
                seeds.append(old)
                continue
        res = {"args": _seed_args(args), **run_seed(seed, args)}
        atomic_write_json(part, res)
        seeds.append(res)
        print(json.dumps({m: {k: res["modes"][m][k] for k in ("recall", "precision", "ap50", "fps")}
                          for m in res["modes"]}), flush=True)
    if args.only_seeds:
        return
    summary = summarize_seeds([s["modes"] for s in seeds])
    out: dict[str, Any] = {}
    for m in MODES:
        s = summary[m]
        out[m] = {**{k: s[k]["mean"] for k in s}, **{f"{k}_std": s[k]["std"] for k in s},
                  "recall_by_size": {k: float(np.mean([r["modes"][m]["recall_by_size"][k] for r in seeds]))
                                     for k in ("small", "medium", "large")},
                  "per_seed": {k: s[k]["per_seed"] for k in s}}
    ratios = [r["modes"]["stp"]["macs_per_frame"] / r["modes"]["full_frame"]["macs_per_frame"] for r in seeds]
    out["stp_macs_vs_full_frame"] = float(np.mean(ratios))
    out["stp_macs_vs_tiles"] = float(np.mean([r["modes"]["stp"]["macs_per_frame"] / r["modes"]["tiles"]
                                              ["macs_per_frame"] for r in seeds]))
    out["stp_fps_vs_full_frame"] = float(np.mean([r["modes"]["stp"]["fps"] / r["modes"]["full_frame"]["fps"]
                                                  for r in seeds]))
    out["stp_fps_vs_tiles"] = float(np.mean([r["modes"]["stp"]["fps"] / r["modes"]["tiles"]["fps"] for r in seeds]))
    out["differences_pp"] = summary["differences_pp"]
    out["seeds"] = args.seeds
    out["tiles_total"] = seeds[0]["tiles_total"]
    out["protocol"] = {
        "detectors": "tiny grid detector (detect/tinynet.py), one per scale: native (tiles, STP, full frame) and "
                     "trained at the resized frame's scale (resize); same architecture, recipe and steps",
        "choices": "per seed on validation sequences (backgrounds disjoint from training and test): each mode's "
                   "score threshold by best F1; STP's threshold, max_misses, max_age, motion_threshold by "
                   "coordinate search, best F1; the budget and the tile overlap (largest object size) fixed "
                   "beforehand",
        "test": "scored once with the choices; AP@0.5 on each mode's output at its operating threshold",
        "spread": "mean, sample std (ddof 1), min, max over seeds; differences paired per seed",
        "timing": "median per-frame time per seed, the four modes interleaved frame by frame, torch and OpenCV "
                  "one thread, frame generation excluded; raw per-frame times kept per seed",
    }
    out["per_seed"] = seeds
    out["synthetic"] = {"sequences": args.sequences, "frames_per_sequence": args.frames,
                        "val_sequences": args.val_sequences, "val_frames": args.val_frames, "frame_size": [1920, 1080],
                        "tile": args.tile, "min_overlap": SceneConfig().max_size, "budget": args.budget,
                        "scene": {k: getattr(SceneConfig(), k) for k in SceneConfig.__dataclass_fields__}}
    if not args.skip_vtest:
        out["vtest"] = run_vtest(args)
    if not args.skip_sahi:
        out["sahi_slicing"] = sahi_slicing()
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    out["command"] = ".venv/bin/python benchmarks/stp.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if not isinstance(v, bool))
    write_results("stp", _finite(out))


if __name__ == "__main__":
    main()

"""Detection quality with pycocotools (AP at IoU 0.5, and precision / recall at an operating score from
COCOeval's own greedy matching), and the relative energy of a run (tiles x per-tile cost).

COCO-style evaluation (Lin et al., ECCV 2014): 101-point interpolated AP per class, averaged over the
classes present in the ground truth; no detection cap in practice. Recall is also given per COCO size
(small: box area < 32^2 px, medium: < 96^2, large: the rest), which shows where a mode loses objects.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crosslayer.detect.detections import Detections
from crosslayer.errors import ConfigError

__all__ = ["SIZE_RANGES", "DetectionScores", "evaluate_detections", "f1_score", "relative_energy"]

GroundTruth = tuple[NDArray[np.float32], NDArray[np.int64]]
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
                                               "large": (96.0 ** 2, 1e12)}


@dataclass(frozen=True)
class DetectionScores:
    ap50: float
    precision: float
    recall: float
    n_gt: int
    n_det: int
    recall_by_size: dict[str, float] = field(default_factory=dict)
    n_gt_by_size: dict[str, int] = field(default_factory=dict)

    @property
    def f1(self) -> float:
        return f1_score(self.precision, self.recall)

    def as_dict(self) -> dict[str, Any]:
        return {"ap50": self.ap50, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "n_gt": self.n_gt, "n_det": self.n_det, "recall_by_size": dict(self.recall_by_size),
                "n_gt_by_size": dict(self.n_gt_by_size)}


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (0 when either is 0 or undefined)."""
    if not (precision > 0 and recall > 0):
        return 0.0
    return 2 * precision * recall / (precision + recall)


def evaluate_detections(gt: Sequence[GroundTruth], dets: Sequence[Detections], *, num_classes: int,
                        score_threshold: float = 0.0, class_agnostic: bool = False) -> DetectionScores:
    """AP@0.5 (pycocotools), and precision / recall of the detections scoring >= ``score_threshold``."""
    if len(gt) != len(dets):
        raise ConfigError(f"ground truth has {len(gt)} frames but detections {len(dets)}; they must match")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def cls_of(c: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.zeros_like(c) if class_agnostic else c

    ncls = 1 if class_agnostic else num_classes
    if not class_agnostic and any(len(c) and int(np.max(c)) >= num_classes for _, c in gt):
        raise ConfigError(f"ground truth has class ids >= num_classes = {num_classes}; evaluate class-agnostic or "
                          "use a detector with the dataset's classes")
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, ((boxes, classes), d) in enumerate(zip(gt, dets, strict=True)):
        images.append({"id": i, "width": 1, "height": 1})
        for b, c in zip(boxes, cls_of(np.asarray(classes)), strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h})
        for b, s, c in zip(d.boxes, d.scores, cls_of(d.classes), strict=True):
            results.append({"image_id": i, "category_id": int(c) + 1, "score": float(s),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    n_gt = len(anns)
    n_det = sum(1 for r in results if r["score"] >= score_threshold)
    if n_gt == 0:
        return DetectionScores(float("nan"), 0.0 if n_det else float("nan"), float("nan"), 0, n_det)
    if not results:
        counts = {k: sum(1 for a in anns if lo <= a["area"] <= hi) for k, (lo, hi) in SIZE_RANGES.items()}
        return DetectionScores(0.0, float("nan"), 0.0, n_gt, 0, {k: 0.0 if c else float("nan") for k, c in
                                                                   counts.items()}, counts)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": k + 1, "name": str(k)} for k in range(ncls)]}
        coco.createIndex()
        res = coco.loadRes(results)
        ev = COCOeval(coco, res, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng = [[0.0, 1e12], *[list(r) for r in SIZE_RANGES.values()]]
        ev.params.areaRngLbl = ["all", *SIZE_RANGES]
        ev.params.maxDets = [max(100, max((len(d) for d in dets), default=0))]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, -1]  # (recall points, classes)
    present = sorted({a["category_id"] - 1 for a in anns})
    ap = float(np.mean([prec[:, k][prec[:, k] > -1].mean() if (prec[:, k] > -1).any() else 0.0 for k in present]))
    tp = fp = 0
    score_of = {r["id"]: r["score"] for r in res.dataset["annotations"]}
    found = {k: 0 for k in SIZE_RANGES}
    total = {k: 0 for k in SIZE_RANGES}
    for e in ev.evalImgs:
        if e is None:
            continue
        if e["aRng"] != [0.0, 1e12]:  # a size range: recall of its ground truth at the operating score
            name = next(k for k, r in SIZE_RANGES.items() if list(r) == e["aRng"])
            keep = ~np.asarray(e["gtIgnore"]).astype(bool)
            hit = [m > 0 and score_of[int(m)] >= score_threshold for m in np.asarray(e["gtMatches"])[0]]
            found[name] += int((np.asarray(hit, bool) & keep).sum()) if len(hit) else 0
            total[name] += int(keep.sum())
            continue
        scores = np.asarray(e["dtScores"])
        matched = np.asarray(e["dtMatches"])[0] > 0
        ignore = np.asarray(e["dtIgnore"])[0].astype(bool)
        on = (scores >= score_threshold) & ~ignore
        tp += int((on & matched).sum())
        fp += int((on & ~matched).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    by_size = {k: found[k] / total[k] if total[k] else float("nan") for k in SIZE_RANGES}
    return DetectionScores(ap, precision, tp / n_gt, n_gt, n_det, by_size, total)


def relative_energy(tiles_per_frame: float, macs_per_tile: int, energy_per_mac: float | None = None) -> float:
    """Energy per frame: tiles processed x the detector's MACs per tile x the energy of one MAC
    (the hardware stage's ``hw_energy_per_mac``; 1 when absent, i.e. MACs only)."""
    return float(tiles_per_frame) * float(macs_per_tile) * (1.0 if energy_per_mac is None else float(energy_per_mac))

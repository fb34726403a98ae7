"""Axis-aligned box operations on NumPy arrays (``x1, y1, x2, y2`` in pixels, float).

Pure, vectorised functions: IoU / IoS matrices and non-maximum suppression. Hand-written because
torchvision (whose ``box_iou`` / ``nms`` these mirror) has no CPU build in this environment, and
``cv2.dnn.NMSBoxes`` offers neither class-aware suppression nor the intersection-over-smaller
criterion that cross-tile merging needs (as in SAHI's ``NMS`` / ``NMM`` postprocess, Akyon et al., 2022).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["Overlap", "areas", "clip_boxes", "nms", "pairwise_overlap"]

Overlap = Literal["iou", "ios"]
FloatArray = NDArray[np.float32]


def areas(boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    """Area of each box (zero for degenerate boxes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def pairwise_overlap(a: NDArray[np.floating], b: NDArray[np.floating], kind: Overlap = "iou") -> NDArray[np.float64]:
    """Matrix (len(a), len(b)) of intersection over union (``iou``) or over the smaller box (``ios``)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a, area_b = areas(a), areas(b)
    if kind == "iou":
        denom = area_a[:, None] + area_b[None, :] - inter
    elif kind == "ios":
        denom = np.minimum(area_a[:, None], area_b[None, :])
    else:
        raise ValueError(f"overlap kind {kind!r} is not allowed; choose 'iou' or 'ios'")
    return np.where(denom > 0, inter / np.maximum(denom, 1e-12), 0.0)


def nms(boxes: NDArray[np.floating], scores: NDArray[np.floating], threshold: float, *,
        classes: NDArray[np.integer] | None = None, kind: Overlap = "iou") -> NDArray[np.int64]:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when its overlap (``kind``) with a higher-scoring kept box exceeds ``threshold``.
    With ``classes`` only boxes of the same class suppress each other. The overlap matrix is computed
    once (O(n^2) memory, fine for the few hundred boxes of a frame), the greedy pass is a short loop.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    ov = pairwise_overlap(boxes[order], boxes[order], kind)
    if classes is not None:
        c = np.asarray(classes).reshape(-1)[order]
        ov = np.where(c[:, None] == c[None, :], ov, 0.0)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= ov[i] > threshold
    return order[np.asarray(keep, dtype=np.int64)]


def clip_boxes(boxes: NDArray[np.floating], width: float, height: float) -> FloatArray:
    """Boxes clipped to the image ``[0, width] x [0, height]``."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b

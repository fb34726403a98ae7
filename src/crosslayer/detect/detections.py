"""``Detections``: the boxes, scores and classes a detector returns, and their validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from crosslayer.errors import CrossLayerError

__all__ = ["MAX_DETECTIONS", "Detections", "MalformedDetectionsError", "concat", "validate_detections"]

MAX_DETECTIONS = 100_000  # per tile: more is a broken detector, refused before NMS would take O(n^2) memory


class MalformedDetectionsError(CrossLayerError):
    """A detector returned boxes that are not an (N, 4) array of finite ``x1 < x2, y1 < y2`` boxes."""


@dataclass(frozen=True)
class Detections:
    """N detections: ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` pixels, ``scores`` (N,) float32 in
    [0, 1], ``classes`` (N,) int64."""

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    classes: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def take(self, idx: NDArray[np.integer] | NDArray[np.bool_]) -> Detections:
        return Detections(self.boxes[idx], self.scores[idx], self.classes[idx])

    def shifted(self, dx: float, dy: float, scale_x: float = 1.0, scale_y: float = 1.0) -> Detections:
        """Boxes scaled by (``scale_x``, ``scale_y``) then moved by (``dx``, ``dy``): tile to frame coordinates."""
        b = self.boxes * np.array([scale_x, scale_y, scale_x, scale_y], np.float32)
        b = b + np.array([dx, dy, dx, dy], np.float32)
        return Detections(b.astype(np.float32), self.scores, self.classes)

    def to_json(self) -> list[dict[str, object]]:
        return [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "class": int(c)}
                for b, s, c in zip(self.boxes, self.scores, self.classes, strict=True)]


def concat(parts: list[Detections]) -> Detections:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    return Detections(np.concatenate([p.boxes for p in parts]).astype(np.float32),
                      np.concatenate([p.scores for p in parts]).astype(np.float32),
                      np.concatenate([p.classes for p in parts]).astype(np.int64))


def validate_detections(boxes: object, scores: object, classes: object, *, source: str = "detector",
                        num_classes: int | None = None) -> Detections:
    """Check and convert one tile's raw detector output, raising ``MalformedDetectionsError`` on bad data."""
    for name, v in (("boxes", boxes), ("scores", scores), ("classes", classes)):
        n = len(v) if hasattr(v, "__len__") else 0
        if n > MAX_DETECTIONS:
            raise MalformedDetectionsError(f"{source} returned {n} {name} for one tile; at most {MAX_DETECTIONS} "
                                           "are allowed")
    try:
        b = np.asarray(boxes, dtype=np.float32)
        s = np.asarray(scores, dtype=np.float32)
        c = np.asarray(classes)
    except (TypeError, ValueError) as exc:
        raise MalformedDetectionsError(f"{source} returned non-numeric detections ({exc})") from exc
    if b.size == 0 and s.size == 0 and c.size == 0:
        return Detections.empty()
    if b.ndim != 2 or b.shape[1] != 4:
        raise MalformedDetectionsError(f"{source} returned boxes of shape {b.shape}; expected (N, 4) x1, y1, x2, y2")
    n = len(b)
    if s.shape != (n,) or c.shape != (n,):
        raise MalformedDetectionsError(f"{source} returned {n} boxes but scores of shape {s.shape} and classes of "
                                       f"shape {c.shape}; expected ({n},) each")
    if not np.isfinite(b).all() or not np.isfinite(s).all():
        raise MalformedDetectionsError(f"{source} returned NaN or infinite boxes or scores")
    if (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
        raise MalformedDetectionsError(f"{source} returned boxes with x2 <= x1 or y2 <= y1; boxes must be "
                                       "x1, y1, x2, y2 with positive width and height")
    if ((s < 0) | (s > 1)).any():
        raise MalformedDetectionsError(f"{source} returned scores outside [0, 1]")
    if not np.issubdtype(c.dtype, np.integer) and not np.array_equal(c, np.round(c)):
        raise MalformedDetectionsError(f"{source} returned non-integer class ids")
    ci = c.astype(np.int64)
    if (ci < 0).any() or (num_classes is not None and (ci >= num_classes).any()):
        raise MalformedDetectionsError(f"{source} returned class ids outside [0, {num_classes})")
    return Detections(b, s, ci)

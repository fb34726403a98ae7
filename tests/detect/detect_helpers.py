"""Test helpers for the detect tests: a fast exact 'blob' detector (a user detector through the protocol)
and synthetic frames of white squares on black, to test tiling / memory / attention without a network."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
from numpy.typing import NDArray

from crosslayer.detect.detections import Detections


class BlobDetector:
    """Finds bright blobs of at least ``min_side`` px: exact boxes, score 0.9, class 0."""

    class_names = ("blob",)
    macs_per_tile = 1000

    def __init__(self, size: int = 128, min_side: int = 6) -> None:
        self.input_size = (size, size)
        self.min_side = min_side
        self.calls = 0
        self.tiles_seen = 0

    def macs_at(self, width: int, height: int) -> int:
        """Any input size (so it can take whole frames): cost proportional to the area."""
        return self.macs_per_tile * width * height // (self.input_size[0] * self.input_size[1])

    def detect(self, tiles: NDArray[np.uint8]) -> list[Detections]:
        self.calls += 1
        self.tiles_seen += len(tiles)
        out = []
        for t in tiles:
            grey = cv2.cvtColor(t, cv2.COLOR_BGR2GRAY)
            _, _, stats, _ = cv2.connectedComponentsWithStats((grey > 127).astype(np.uint8))
            boxes = [[x, y, x + w, y + h] for x, y, w, h, _a in stats[1:] if min(w, h) >= self.min_side]
            b = np.asarray(boxes, np.float32).reshape(-1, 4)
            out.append(Detections(b, np.full(len(b), 0.9, np.float32), np.zeros(len(b), np.int64)))
        return out


def square_frames(n: int, size: tuple[int, int] = (640, 360), objects: int = 4, side: int = 16,
                  speed: float = 1.0, seed: int = 0) -> Iterator[tuple[NDArray[np.uint8], tuple[NDArray[np.float32],
                                                                                            NDArray[np.int64]]]]:
    """Frames with ``objects`` white squares moving at ``speed`` px/frame, and their exact boxes."""
    rng = np.random.default_rng(seed)
    w, h = size
    pos = rng.uniform([side, side], [w - 2 * side, h - 2 * side], (objects, 2))
    vel = rng.uniform(-1, 1, (objects, 2)) * speed
    for _ in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        boxes = []
        for x, y in pos.astype(int):
            img[y:y + side, x:x + side] = 255
            boxes.append([x, y, x + side, y + side])
        yield img, (np.asarray(boxes, np.float32), np.zeros(objects, np.int64))
        pos = np.clip(pos + vel, side, [w - 2 * side, h - 2 * side])


class FixedInputDetector(BlobDetector):
    """A detector that only takes its own input size (no ``macs_at``)."""

    macs_at = None  # type: ignore[assignment]

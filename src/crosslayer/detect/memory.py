"""The memory mechanism of Selective Tile Processing (Plastiras et al., ICDSC 2018).

A buffer of remembered objects, grouped per tile by the tile core that holds each object's
(predicted) centre. When a tile is processed its new detections are matched to the remembered
objects of that tile by IoU (greedy, highest IoU first): a match is an object already seen, a
detection without a match is a new object, and a remembered object the tile no longer shows is
forgotten after more than ``max_misses`` visits without it (1 by default: one missed detection,
a flicker of the detector, does not erase an object until the tile's next visit). Objects in tiles
that are not processed this frame are carried forward, shifted by a constant-velocity estimate
(smoothed over their sightings), so every frame has an output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from crosslayer.config import check_range
from crosslayer.detect.boxes import pairwise_overlap
from crosslayer.detect.detections import Detections
from crosslayer.detect.tiling import owner_tile

__all__ = ["TileMemory", "UpdateStats"]


@dataclass
class UpdateStats:
    """What one update found per processed tile: detections, and how many of them were new."""

    objects: dict[int, int] = field(default_factory=dict)
    new: dict[int, int] = field(default_factory=dict)


class TileMemory:
    """Remembered objects: boxes (frame px), scores, classes, frame last seen, velocity (px/frame)."""

    def __init__(self, cores: NDArray[np.float32], *, match_iou: float = 0.3, velocity_smoothing: float = 0.5,
                 use_velocity: bool = True, max_misses: int = 1) -> None:
        check_range("match_iou", match_iou, 0.0, 1.0, lo_open=True)
        check_range("max_misses", max_misses, 0)
        self.max_misses = max_misses
        self.misses = np.zeros(0, np.int64)
        check_range("velocity_smoothing", velocity_smoothing, 0.0, 1.0)
        self.cores = np.asarray(cores, np.float32)
        self.match_iou = match_iou
        self.alpha = velocity_smoothing
        self.use_velocity = use_velocity
        self.boxes = np.zeros((0, 4), np.float32)
        self.scores = np.zeros(0, np.float32)
        self.classes = np.zeros(0, np.int64)
        self.seen = np.zeros(0, np.int64)
        self.velocity = np.zeros((0, 2), np.float32)

    def __len__(self) -> int:
        return len(self.boxes)

    def predicted(self, frame: int) -> NDArray[np.float32]:
        """Remembered boxes moved to ``frame`` by their velocity."""
        if not self.use_velocity or len(self) == 0:
            return self.boxes.copy()
        dt = (frame - self.seen).astype(np.float32)[:, None]
        shift = np.concatenate([self.velocity, self.velocity], 1) * dt
        return (self.boxes + shift).astype(np.float32)

    def owners(self, frame: int) -> NDArray[np.int64]:
        """Tile (core) index of every remembered object's predicted centre."""
        b = self.predicted(frame)
        return owner_tile(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1), self.cores)

    def counts(self, frame: int) -> NDArray[np.int64]:
        """Remembered objects per tile."""
        return np.bincount(self.owners(frame), minlength=len(self.cores)).astype(np.int64)

    def carried(self, frame: int, exclude_tiles: NDArray[np.int64]) -> Detections:
        """Remembered objects (at their predicted position) in tiles other than ``exclude_tiles``."""
        if len(self) == 0:
            return Detections.empty()
        keep = ~np.isin(self.owners(frame), exclude_tiles)
        return Detections(self.predicted(frame)[keep], self.scores[keep], self.classes[keep])

    def update(self, frame: int, processed: NDArray[np.int64], dets: Detections) -> UpdateStats:
        """Replace the memory of the ``processed`` tiles by ``dets`` (frame coordinates), counting new objects.

        Detections whose centre lies outside the processed tiles' cores are ignored (those tiles own them).
        """
        processed = np.asarray(processed, np.int64)
        stats = UpdateStats({int(t): 0 for t in processed}, {int(t): 0 for t in processed})
        d_owner = owner_tile(np.stack([(dets.boxes[:, 0] + dets.boxes[:, 2]) / 2,
                                       (dets.boxes[:, 1] + dets.boxes[:, 3]) / 2], 1), self.cores) \
            if len(dets) else np.zeros(0, np.int64)
        in_proc = np.isin(d_owner, processed)
        dets = dets.take(in_proc)
        d_owner = d_owner[in_proc]
        m_owner = self.owners(frame) if len(self) else np.zeros(0, np.int64)
        m_in = np.isin(m_owner, processed)
        old_idx = np.nonzero(m_in)[0]
        pred = self.predicted(frame)[old_idx]
        iou = pairwise_overlap(dets.boxes, pred, "iou")
        match = np.full(len(dets), -1, np.int64)
        if iou.size:
            pairs = np.argwhere(iou >= self.match_iou)
            order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")
            used_d, used_m = set(), set()
            for d, m in pairs[order]:
                if d not in used_d and m not in used_m:
                    match[d] = old_idx[m]
                    used_d.add(d)
                    used_m.add(m)
        vel = np.zeros((len(dets), 2), np.float32)
        for k in np.nonzero(match >= 0)[0]:
            j = match[k]
            dt = max(1, frame - int(self.seen[j]))
            c_new = (dets.boxes[k, :2] + dets.boxes[k, 2:]) / 2
            c_old = (self.boxes[j, :2] + self.boxes[j, 2:]) / 2
            vel[k] = self.alpha * (c_new - c_old) / dt + (1 - self.alpha) * self.velocity[j]
        for t, is_new in zip(d_owner, match < 0, strict=True):
            stats.objects[int(t)] += 1
            stats.new[int(t)] += int(is_new)
        keep = ~m_in
        unmatched_old = np.setdiff1d(old_idx, match[match >= 0])
        self.misses[unmatched_old] += 1
        keep[unmatched_old[self.misses[unmatched_old] <= self.max_misses]] = True  # tolerate a missed detection
        self.misses = np.concatenate([self.misses[keep], np.zeros(len(dets), np.int64)])
        self.boxes = np.concatenate([self.boxes[keep], dets.boxes]).astype(np.float32)
        self.scores = np.concatenate([self.scores[keep], dets.scores]).astype(np.float32)
        self.classes = np.concatenate([self.classes[keep], dets.classes]).astype(np.int64)
        self.seen = np.concatenate([self.seen[keep], np.full(len(dets), frame, np.int64)])
        self.velocity = np.concatenate([self.velocity[keep], vel]).astype(np.float32)
        return stats

"""The attention mechanism of Selective Tile Processing (Plastiras et al., ICDSC 2018): which tiles
to process in the next frame, from statistics gathered over past frames.

Score of tile ``i`` at frame ``f`` (all terms >= 0)::

    S_i = w_objects * N_i            objects the memory places in tile i now
        + w_new     * E_i            exponential average of new objects found when tile i was processed
        + w_age     * A_i            frames since tile i was last processed (so every tile is revisited)
        + w_motion  * M_i            share (0-1) of tile i's pixels that changed by more than
                                     ``motion_threshold`` grey levels since tile i was last processed
                                     (frame difference on a 1/``motion_downscale`` subsampled grey image, over
                                     the tile's core: the part of the frame the tile owns)

The ``k`` highest-scoring tiles are processed (ties: lower index first), where ``k`` is a fixed
count or ``ceil(fraction x tiles)``; a tile not processed for ``max_age`` frames is forced in
(within the budget), and the first frame processes every tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from crosslayer.config import check_range
from crosslayer.detect.memory import UpdateStats
from crosslayer.errors import ConfigError

__all__ = ["AttentionWeights", "TileAttention", "budget_tiles"]


@dataclass(frozen=True, kw_only=True)
class AttentionWeights:
    """Weights of the score terms (see the module docstring)."""

    objects: float = 1.0
    new: float = 2.0
    age: float = 0.25
    motion: float = 20.0
    new_decay: float = 0.5

    def validate(self) -> None:
        for name in ("objects", "new", "age", "motion"):
            check_range(f"weights.{name}", getattr(self, name), 0.0)
        check_range("weights.new_decay", self.new_decay, 0.0, 1.0)


def budget_tiles(n_tiles: int, budget: float) -> int:
    """Tiles per frame for a budget: ``budget`` >= 1 is a count, 0 < ``budget`` < 1 a fraction (rounded up)."""
    if not 0 < budget < math.inf:
        raise ConfigError(f"budget = {budget!r} is not allowed; use a fraction in (0, 1) or a tile count >= 1")
    if budget >= 1:
        if budget != int(budget):
            raise ConfigError(f"budget = {budget!r} is not allowed; a count of tiles must be a whole number")
        return min(int(budget), n_tiles)
    return max(1, min(n_tiles, math.ceil(budget * n_tiles)))


class TileAttention:
    """Per-tile statistics across frames and the choice of the tiles to process."""

    def __init__(self, cores: NDArray[np.floating], k: int, weights: AttentionWeights | None = None, *,
                 max_age: int = 0, use_motion: bool = True, motion_threshold: float = 20.0,
                 motion_downscale: int = 8) -> None:
        self.weights = weights or AttentionWeights()
        self.weights.validate()
        check_range("k", k, 1, len(cores))
        check_range("max_age", max_age, 0)
        check_range("motion_downscale", motion_downscale, 1)
        self.cores = np.round(np.asarray(cores, np.float64)).astype(np.int64)
        self.k = k
        self.max_age = max_age
        self.use_motion = use_motion
        self.motion_threshold = motion_threshold
        self.down = motion_downscale
        n = len(cores)
        self.age = np.zeros(n, np.float64)
        self.new_avg = np.zeros(n, np.float64)
        self.last_scores = np.zeros(n, np.float64)
        self._ref: NDArray[np.uint8] | None = None
        self._small: NDArray[np.uint8] | None = None
        self._started = False

    def _motion(self, frame: NDArray[np.uint8]) -> NDArray[np.float64]:
        h, w = frame.shape[:2]
        sub = frame[: (h // self.down) * self.down: self.down, : (w // self.down) * self.down: self.down]
        # plain subsampling (a strided view): ~20x cheaper than an area resize of the full frame, and
        # sensor noise stays far below ``motion_threshold``
        small = np.ascontiguousarray(cv2.cvtColor(sub, cv2.COLOR_BGR2GRAY) if sub.ndim == 3 else sub, np.uint8)
        self._small = small
        if self._ref is None:
            self._ref = small.copy()
        changed = (cv2.absdiff(small, self._ref) > self.motion_threshold).astype(np.float32)
        integral = cv2.integral(changed)  # (h+1, w+1): the changed share per tile in O(tiles)
        t = np.clip(self.cores // self.down, 0, [changed.shape[1], changed.shape[0]] * 2)
        s = integral[t[:, 3], t[:, 2]] - integral[t[:, 1], t[:, 2]] - integral[t[:, 3], t[:, 0]] \
            + integral[t[:, 1], t[:, 0]]
        area = np.maximum((t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1]), 1)
        return np.asarray(s / area, np.float64)

    def scores(self, frame: NDArray[np.uint8], object_counts: NDArray[np.int64]) -> NDArray[np.float64]:
        """``S_i`` for every tile (the module docstring's formula)."""
        w = self.weights
        s = w.objects * object_counts + w.new * self.new_avg + w.age * self.age
        if self.use_motion and w.motion > 0:
            s = s + w.motion * self._motion(frame)
        self.last_scores = s
        return s

    def select(self, frame: NDArray[np.uint8], object_counts: NDArray[np.int64]) -> NDArray[np.int64]:
        """Indices of the tiles to process in ``frame`` (sorted)."""
        if not self._started:
            self._started = True
            if self.use_motion:
                self._motion(frame)
            return np.arange(len(self.cores), dtype=np.int64)
        s = self.scores(frame, object_counts)
        order = np.lexsort((np.arange(len(s)), -s))
        if self.max_age > 0:
            overdue = np.nonzero(self.age >= self.max_age)[0]
            overdue = overdue[np.argsort(-self.age[overdue], kind="stable")]
            order = np.concatenate([overdue, order[~np.isin(order, overdue)]])
        return np.sort(order[: self.k]).astype(np.int64)

    def update(self, processed: NDArray[np.int64], stats: UpdateStats) -> None:
        """After a frame: reset the age and motion reference of processed tiles, fold in the new-object counts."""
        self.age += 1
        self.age[processed] = 0
        d = self.weights.new_decay
        for t in processed:
            self.new_avg[t] = d * self.new_avg[t] + (1 - d) * stats.new.get(int(t), 0)
        if self.use_motion and self._small is not None and self._ref is not None:
            for t in processed:
                x1, y1, x2, y2 = (self.cores[t] // self.down).tolist()
                self._ref[y1:y2, x1:x2] = self._small[y1:y2, x1:x2]

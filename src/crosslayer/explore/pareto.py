"""Pareto-optimal design points: pure functions on arrays of objective values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crosslayer.errors import ConfigError

__all__ = ["dominates", "pareto_front"]


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` dominates ``b`` when it is no worse in every objective and better in one (all minimised)."""
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_front(values: Sequence[Sequence[float]] | np.ndarray, maximize: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points, sorted by the first objective.

    ``values[i][j]`` is objective ``j`` of point ``i``; ``maximize[j]`` tells its sense (e.g. accuracy
    maximised, storage bits minimised). Duplicated points are all kept.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(maximize):
        raise ConfigError(f"values must be (points, {len(maximize)}) objectives, got shape {v.shape}")
    if v.size and not np.isfinite(v).all():
        raise ConfigError("objective values must be finite")
    cost = np.where(np.asarray(maximize), -v, v)
    # Point i is dominated if some j is <= in all objectives and < in one (vectorised over pairs).
    le = np.all(cost[None, :, :] <= cost[:, None, :], axis=2)
    lt = np.any(cost[None, :, :] < cost[:, None, :], axis=2)
    dominated = np.any(le & lt, axis=1)
    idx = np.flatnonzero(~dominated)
    return sorted(idx.tolist(), key=lambda i: (cost[i, 0], tuple(cost[i, 1:])))

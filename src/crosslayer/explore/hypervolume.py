"""Hypervolume of a two-objective point set (Zitzler & Thiele, "Multiobjective Evolutionary Algorithms: A
Comparative Case Study and the Strength Pareto Approach", IEEE TEC 1999): the area that the points dominate up to
a reference point, both objectives minimised. A pure function of arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crosslayer.errors import ConfigError

__all__ = ["hypervolume_2d"]


def hypervolume_2d(points: Sequence[Sequence[float]] | np.ndarray, reference: Sequence[float]) -> float:
    """Area dominated by ``points`` (``(n, 2)``, both objectives minimised) and bounded by ``reference``.

    Points that do not dominate the reference point (any coordinate ``>=`` its) add nothing. The sweep: sort
    the points by the first objective; each one that improves the best second objective so far adds the strip
    between it and the next one.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (2,) or not np.isfinite(ref).all():
        raise ConfigError(f"reference must be two finite numbers, got {list(reference)}")
    if not np.isfinite(p).all():
        raise ConfigError("hypervolume points must be finite")
    p = p[(p[:, 0] < ref[0]) & (p[:, 1] < ref[1])]
    if not len(p):
        return 0.0
    p = p[np.lexsort((p[:, 1], p[:, 0]))]
    area, best = 0.0, ref[1]
    for i, (x, y) in enumerate(p):
        best = min(best, y)
        nxt = p[i + 1, 0] if i + 1 < len(p) else ref[0]
        area += (nxt - x) * (ref[1] - best)
    return float(area)

"""Exact low-rank factorization of a multiplier's product table: ``T[w, a] = sum_r F[w, r] G[r, a] / D``.

With such a factorization the approximate accumulation of a layer,
``sum_k T[w_ok, a_mk] = (1/D) sum_r sum_k F[w_ok, r] G[r, a_mk]``, is ONE ordinary convolution / matmul
on ``R`` stacked channels of transformed codes (``F`` applied to the weights, ``G`` to the
activations): the multiplier costs ``R`` times the multiply-accumulates of the exact layer and no
lookup per MAC. Many approximate designs have a tiny exact rank: DRUM multiplies two transformed
operands (rank 1, Hashemi et al., ICCAD 2015), perforation drops rows of one operand (rank 1,
Zervakis et al., TVLSI 2016), Kulkarni's 2x2-block design errs by a product of digit indicators
(rank 2), truncation / broken-array designs are linear in each operand's bits (rank <= 8, Mahdiani
et al., TCAS-I 2010). This is the "exact product plus cheap correction" decomposition AdaPT /
TransAxx-style emulators approximate with lookups, made exact.

The factorization is found, not hand-written, so it covers truth tables loaded from files too:
pivot activation columns are chosen greedily (small operands first, so the activation-side factors
tend to be operand bits), ``F = T[:, pivots]`` are plain table entries, ``G`` solves ``F G = T`` and is
rationalised with a common denominator ``D``; the result is accepted only when ``F @ G == D * T``
holds exactly in integer arithmetic. A table whose rank exceeds ``max_rank`` (Mitchell's logarithmic
multiplier has rank 64) gets ``None``: the caller uses table lookups instead.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["TableFactors", "factorize", "table_factors"]

_MAX_DENOMINATOR = 1 << 12
_MAX_COEFF = 1 << 24


@dataclass(frozen=True)
class TableFactors:
    """``T[w - w_lo, a - a_lo] = sum_r weight[w - w_lo, r] * act[r, a - a_lo] / denominator`` exactly.

    ``weight`` (W x R) and ``act`` (R x A) are int64 arrays; ``identity`` is True when the table is the
    exact product ``w * a`` with ``weight`` = the weight codes and ``act`` = the activation codes.
    """

    weight: np.ndarray
    act: np.ndarray
    denominator: int
    w_lo: int
    a_lo: int
    identity: bool

    @property
    def rank(self) -> int:
        return int(self.weight.shape[1])


def _rationalize(x: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Integers ``N`` and ``D`` with ``N / D == x`` (entries with small denominators), or None."""
    den = 1
    for v in np.unique(np.round(x, 9)):
        f = Fraction(float(v)).limit_denominator(_MAX_DENOMINATOR)
        if abs(float(f) - float(v)) > 1e-7:
            return None
        den = den * f.denominator // math.gcd(den, f.denominator)
        if den > _MAX_DENOMINATOR:
            return None
    n = np.round(x * den)
    if np.abs(n).max(initial=0) >= _MAX_COEFF:
        return None
    return n.astype(np.int64), den


def _pivot_order(a_lo: int, n_a: int) -> list[int]:
    """Column indices ordered by operand magnitude (0, 1, -1, 2, -2, ...): small operands first."""
    values = np.arange(a_lo, a_lo + n_a)
    return [int(i) for i in np.lexsort((values < 0, np.abs(values)))]


def factorize(table: np.ndarray, w_lo: int, a_lo: int, max_rank: int = 16) -> TableFactors | None:
    """The exact factorization of an integer table (rows = weight codes from ``w_lo``, columns =
    activation codes from ``a_lo``), or None when its rank exceeds ``max_rank`` or no small-denominator
    factorization exists."""
    t = np.asarray(table, dtype=np.int64)
    tf = t.astype(np.float64)
    if not t.any():
        return None
    scale = float(np.abs(tf).max())
    tol = scale * max(t.shape) * 1e-12
    if np.linalg.matrix_rank(tf, tol=tol) > max_rank:
        return None
    basis: list[int] = []
    q = np.zeros((t.shape[0], 0))
    for j in _pivot_order(a_lo, t.shape[1]):
        col = tf[:, j]
        resid = col - q @ (q.T @ col)
        norm = float(np.linalg.norm(resid))
        if norm > tol * 100 and norm > 1e-6 * max(1.0, float(np.linalg.norm(col))):
            basis.append(j)
            q = np.column_stack([q, resid / norm])
            if len(basis) > max_rank:
                return None
    f = t[:, basis]
    g, *_ = np.linalg.lstsq(f.astype(np.float64), tf, rcond=None)
    rat = _rationalize(g)
    if rat is None:
        return None
    g_int, den = rat
    check = f.astype(object) @ g_int.astype(object)
    if not np.array_equal(check, (t * den).astype(object)):
        return None
    w_codes = np.arange(w_lo, w_lo + t.shape[0])
    a_codes = np.arange(a_lo, a_lo + t.shape[1])
    identity = (den == 1 and f.shape[1] == 1 and np.array_equal(f[:, 0], w_codes)
                and np.array_equal(g_int[0], a_codes))
    f.setflags(write=False)
    g_int.setflags(write=False)
    return TableFactors(f, g_int, den, w_lo, a_lo, identity)


@functools.lru_cache(maxsize=256)
def _cached(key: bytes, shape: tuple[int, int], w_lo: int, a_lo: int, max_rank: int) -> TableFactors | None:
    return factorize(np.frombuffer(key, dtype=np.int64).reshape(shape), w_lo, a_lo, max_rank)


def table_factors(table: np.ndarray, w_lo: int, a_lo: int, max_rank: int = 16) -> TableFactors | None:
    """:func:`factorize`, memoised on the table's contents (layers sharing a multiplier share the work)."""
    t = np.ascontiguousarray(table, dtype=np.int64)
    return _cached(t.tobytes(), t.shape, w_lo, a_lo, max_rank)

"""The exhaustive DRAM tiling search: every (m, p, c) tile-size candidate of a layer scored under the three
traffic cases (see :mod:`crosslayer.hw.tiling` for the model).

This is the definition the fast search in :mod:`crosslayer.hw.tiling` must reproduce: that one scores only the
candidates that can win and falls back to this one for a layer whose numbers are too large to prove it
exactly (tests compare the two on many random configurations).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from crosslayer.hw.shapes import distinct_ceils

__all__ = ["ShapeKey", "Tiling", "exhaustive_tilings", "grid"]

# (filters per group m, channels per group c, output rows pp (batch stacked), row length qq, kernel r, s,
#  stride, padded input width, pooling?)
ShapeKey = tuple[int, int, int, int, int, int, int, int, bool]
# (case, m_tile, p_tile, c_tile, weight, input, output bits, first tile's weight + input bits, last output
#  tile's bits), or the bytes the smallest tile needs when none fits
Tiling = tuple[int, int, int, int, float, float, float, float, float] | int


def candidates(d: int) -> np.ndarray:
    """``sorted({ceil(d / k)})``: the only tile sizes whose tile counts differ."""
    return np.array(distinct_ceils(d), dtype=np.int64)


@dataclass(frozen=True)
class Grid:
    """Every (m, p, c) tile-size candidate of one layer shape and what it moves, in elements."""

    mt: np.ndarray
    pt: np.ndarray
    ct: np.ndarray
    n_m: np.ndarray
    n_p: np.ndarray
    spills: np.ndarray        # n_c > 1: the output tile is revisited (partial sums go to DRAM and back)
    spill_factor: np.ndarray  # 2 n_c - 1: writes and reads of partial sums per output
    wt_elems: np.ndarray      # weight tile
    in_elems: np.ndarray      # input tile (rows with halo x padded width)
    out_elems: np.ndarray     # output tile
    base_i_elems: np.ndarray  # input elements read by all p tiles once, halos included


@lru_cache(maxsize=256)
def grid(m: int, c: int, pp: int, qq: int, r: int, s: int, st: int, w_in: int, pool: bool) -> Grid:
    a, b, e = candidates(m), candidates(pp), candidates(c)
    mt = np.repeat(a, b.size * e.size)                   # the (m, p, c) grid in row-major order
    pt = np.tile(np.repeat(b, e.size), a.size)
    ct = np.tile(e, a.size * b.size)
    n_p = -(-pp // pt)
    n_c = -(-c // ct)
    wt = np.zeros_like(mt) if pool else mt * ct * r * s
    in_rows = (pt - 1) * st + r
    g = Grid(mt=mt, pt=pt, ct=ct, n_m=-(-m // mt), n_p=n_p, spills=n_c > 1, spill_factor=2.0 * n_c - 1.0,
             wt_elems=wt, in_elems=ct * in_rows * w_in, out_elems=mt * pt * qq,
             base_i_elems=c * w_in * (st * (pp - n_p) + n_p * r))
    for arr in g.__dict__.values():
        arr.setflags(write=False)
    return g


def exhaustive_tilings(keys: tuple[ShapeKey, ...], groups: list[int], wb: np.ndarray, ab: np.ndarray,
                       act: np.ndarray, psum: np.ndarray, glb_bits: int) -> list[Tiling]:
    """For each layer the least-traffic tiling over every candidate under every case: traffic, then the
    smallest first load and last write-back (the transfers double buffering cannot hide), then the earlier
    case, then the earlier candidate. ``wb`` / ``ab`` are the stored bits per weight / input, ``act`` the
    output bits, ``psum`` the partial-sum bits."""
    out: list[Tiling] = []
    for j, key in enumerate(keys):
        g = grid(*key)
        w_b, a_b, o_b, p_b = float(wb[j]), float(ab[j]), float(act[j]), float(psum[j])
        foot = g.wt_elems * w_b + g.in_elems * a_b + g.out_elems * p_b
        fits = foot <= glb_bits
        if not fits.any():
            out.append(int(np.ceil(foot.min() / 8)))
            continue
        m, c, pp, qq, r, s = key[:6]
        bw = 0.0 if key[8] else m * c * r * s * w_b
        out_vals = float(m * pp * qq)
        once = out_vals * o_b
        spill_bits = out_vals * p_b
        totals = []
        bi = g.base_i_elems * a_b
        spill = np.where(g.spills, spill_bits * g.spill_factor, once)
        for case in range(3):
            if case == 0:       # c innermost: inputs once per m tile, weights once per p tile, outputs once
                t = bw * g.n_p + bi * g.n_m + once
            elif case == 1:     # p innermost: weights once, inputs once per m tile, partial sums spill
                t = bw + bi * g.n_m + spill
            else:               # m innermost: weights once per p tile, inputs once, partial sums spill
                t = bw * g.n_p + bi + spill
            totals.append(np.where(fits, t, np.inf))
        least = min(float(t.min()) for t in totals)
        best_case, best, best_exp = 0, 0, np.inf
        for case, t in enumerate(totals):
            tied = np.flatnonzero(t == least)
            if tied.size:
                e = g.wt_elems[tied] * w_b + g.in_elems[tied] * a_b + g.out_elems[tied] * o_b
                k = int(np.argmin(e))
                if e[k] < best_exp:
                    best_case, best, best_exp = case, int(tied[k]), float(e[k])
        n_p, n_m = float(g.n_p[best]), float(g.n_m[best])
        base_i = float(g.base_i_elems[best] * a_b)
        o_spill = spill_bits * float(g.spill_factor[best]) if g.spills[best] else once
        w, i, o = ((bw * n_p, base_i * n_m, once), (bw, base_i * n_m, o_spill), (bw * n_p, base_i, o_spill))[best_case]
        first = float(g.wt_elems[best] * w_b + g.in_elems[best] * a_b)
        last = float(g.out_elems[best] * o_b)
        out.append((best_case, int(g.mt[best]), int(g.pt[best]), int(g.ct[best]), w * groups[j], i * groups[j],
                    o * groups[j], first, last))
    return out

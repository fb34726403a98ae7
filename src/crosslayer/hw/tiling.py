"""DRAM tiling of one layer: the tile sizes and loop order that move the fewest bits through DRAM.

The layer's loops over output channels (m), output rows (p, batch stacked) and input channels (c) are
tiled so that one weight, input and output tile fit the global buffer together; the three tile loops
run in one of six orders. Reuse analysis (the loop-nest rule of Timeloop, Parashar et al., ISPASS 2019,
and of Eyeriss's own analysis): an operand is re-fetched from DRAM once per iteration of every loop it
does not depend on that sits outside its innermost dependent loop; outputs whose reduction loop (c) is
outside spill partial sums (write + read back).

With three loops each operand depends on two, so only the innermost loop matters: the operand that does
not depend on it is re-fetched once per iteration of the one loop it lacks, the other two are fetched
once. The six orders therefore fall into three traffic cases (innermost c, p or m); the search evaluates
the three cases over every tile-size candidate ``ceil(D / k)`` at once with NumPy. Among the tilings with the
least traffic it keeps the one whose first tile (weights + inputs) and last output tile are smallest: those
two transfers are the ones double buffering cannot hide behind compute. The candidate grid depends only on
the layer's shape and is cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from crosslayer.hw.accelerator import Accelerator
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerShape, distinct_ceils

__all__ = ["MAX_TILING_CANDIDATES", "clear_caches", "dram_tiling", "tiling_bits"]

MAX_TILING_CANDIDATES = 1 << 20   # ~100 MB of candidate arrays; real layers need well under 10^5

# innermost loop -> the first of the six orders (itertools.permutations("mpc")) with that innermost loop
_CASE_ORDER = ("mpc", "mcp", "pcm")   # innermost c, p, m


def _candidates(d: int) -> np.ndarray:
    """``sorted({ceil(d / k)})``: the only tile sizes whose tile counts differ."""
    return np.array(distinct_ceils(d), dtype=np.int64)


@dataclass(frozen=True)
class _Grid:
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
    c_first: np.ndarray       # indices of the candidates with the smallest c tile
    m_first: np.ndarray       # indices of the candidates with the smallest m tile


@lru_cache(maxsize=4096)
def _grid(m: int, c: int, pp: int, qq: int, r: int, s: int, st: int, w_in: int, pool: bool) -> _Grid:
    a, b, e = _candidates(m), _candidates(pp), _candidates(c)
    mt = np.repeat(a, b.size * e.size)                   # the (m, p, c) grid in row-major order
    pt = np.tile(np.repeat(b, e.size), a.size)
    ct = np.tile(e, a.size * b.size)
    n_p = -(-pp // pt)
    n_c = -(-c // ct)
    wt = np.zeros_like(mt) if pool else mt * ct * r * s
    in_rows = (pt - 1) * st + r
    g = _Grid(mt=mt, pt=pt, ct=ct, n_m=-(-m // mt), n_p=n_p, spills=n_c > 1, spill_factor=2.0 * n_c - 1.0,
              wt_elems=wt, in_elems=ct * in_rows * w_in, out_elems=mt * pt * qq,
              base_i_elems=c * w_in * (st * (pp - n_p) + n_p * r), c_first=np.flatnonzero(ct == ct.min()),
              m_first=np.flatnonzero(mt == mt.min()))
    for a in g.__dict__.values():
        a.setflags(write=False)
    return g


def _shape_key(layer: LayerShape) -> tuple[int, int, int, int, int, int, int, int, bool]:
    return (layer.filters_per_group, layer.channels_per_group, layer.batch * layer.out_h, layer.out_w,
            layer.kernel_h, layer.kernel_w, layer.stride, layer.in_w + 2 * layer.padding, layer.kind == "pool")


@lru_cache(maxsize=65536)
def _best(key: tuple[int, int, int, int, int, int, int, int, bool], groups: int, wb: float, ab: float,
          act_bits: int, psum_bits: int, glb_bits: int) -> tuple[int, int, int, int, float, float, float, float,
                                                                  float] | int:
    """The best tiling's ``(case, m_tile, p_tile, c_tile, weight, input, output bits, first tile's weight +
    input bits, last output tile's bits)``, or the bytes the smallest tile needs when none fits."""
    m, c, pp, qq, r, s, _st, _w_in, pool = key
    g = _grid(*key)
    foot = g.wt_elems * wb + g.in_elems * ab + g.out_elems * psum_bits
    fits = foot <= glb_bits
    if not fits.any():
        return int(np.ceil(foot.min() / 8))
    base_w = 0.0 if pool else m * c * r * s * wb
    out_vals = m * pp * qq
    o_once = float(out_vals * act_bits)
    spill_bits = out_vals * psum_bits
    # Traffic of the three cases (weight + input + output bits). With c innermost it does not depend on the c
    # tile and with m innermost not on the m tile, so there only the smallest such tile (the smallest
    # footprint and first load, the first index) can win: those cases are scored on that slice of the grid.
    ic, im = g.c_first, g.m_first
    t_c = base_w * g.n_p[ic] + g.base_i_elems[ic] * ab * g.n_m[ic] + o_once
    t_p = base_w + g.base_i_elems * ab * g.n_m + np.where(g.spills, spill_bits * g.spill_factor, o_once)
    t_m = base_w * g.n_p[im] + g.base_i_elems[im] * ab + np.where(g.spills[im], spill_bits * g.spill_factor[im],
                                                                    o_once)
    cases = ((np.where(fits[ic], t_c, np.inf), ic), (np.where(fits, t_p, np.inf), None),
             (np.where(fits[im], t_m, np.inf), im))
    least = min(float(t.min()) for t, _ in cases)
    # among the least-traffic tilings, the one whose first load and last write-back (the transfers double
    # buffering cannot hide) are smallest; then the earlier case, then the smaller tile
    best_case, best_j, best_exp = 0, 0, np.inf
    for case, (total, where) in enumerate(cases):
        tied = np.flatnonzero(total == least)
        if tied.size:
            js = tied if where is None else where[tied]
            e = g.wt_elems[js] * wb + g.in_elems[js] * ab + g.out_elems[js] * act_bits
            k = int(np.argmin(e))
            if e[k] < best_exp:
                best_case, best_j, best_exp = case, int(js[k]), float(e[k])
    n_p, n_m = float(g.n_p[best_j]), float(g.n_m[best_j])
    base_i = float(g.base_i_elems[best_j] * ab)
    o_spill = spill_bits * float(g.spill_factor[best_j]) if g.spills[best_j] else o_once
    w, i, o = ((base_w * n_p, base_i * n_m, o_once), (base_w, base_i * n_m, o_spill),
               (base_w * n_p, base_i, o_spill))[best_case]

    first = float(g.wt_elems[best_j] * wb + g.in_elems[best_j] * ab)
    last = float(g.out_elems[best_j] * act_bits)
    return (best_case, int(g.mt[best_j]), int(g.pt[best_j]), int(g.ct[best_j]), w * groups, i * groups,
            o * groups, first, last)


def tiling_bits(layer: LayerShape, acc: Accelerator, *, weight_ratio: float = 1.0, input_ratio: float = 1.0,
                psum_bits: int = 16) -> tuple[str, int, int, int, float, float, float, float, float]:
    """``(order, m_tile, p_tile, c_tile, weight_bits, input_bits, output_bits, first_bits, last_bits)`` of the
    least-traffic tiling (cached per layer shape, bit widths and buffer size): DRAM traffic per operand, the
    first tile's weights and inputs (loaded before compute can start) and the last output tile (written
    after it ends)."""
    key = _shape_key(layer)
    size = len(distinct_ceils(key[0])) * len(distinct_ceils(key[1])) * len(distinct_ceils(key[2]))
    if size > MAX_TILING_CANDIDATES:
        raise MappingError(f"layer {layer.name!r} has {size} DRAM tiling candidates (tile sizes of {key[0]} "
                           f"filters x {key[2]} output rows x {key[1]} channels); at most {MAX_TILING_CANDIDATES} "
                           "are searched: split the batch or the layer")
    best = _best(key, layer.groups, layer.weight_bits * weight_ratio, layer.act_bits * input_ratio,
                 layer.act_bits, psum_bits, acc.glb_bytes * 8)
    if isinstance(best, int):
        raise MappingError(f"layer {layer.name!r} fits no tiling: its smallest tile needs {best} bytes of global "
                           f"buffer but glb_bytes = {acc.glb_bytes}")
    case, mt, pt, ct, wbits, ibits, obits, first, last = best
    return _CASE_ORDER[case], mt, pt, ct, wbits, ibits, obits, first, last


def dram_tiling(layer: LayerShape, acc: Accelerator, *, weight_ratio: float = 1.0, input_ratio: float = 1.0,
                psum_bits: int = 16) -> dict[str, Any]:
    """The DRAM traffic (in bits, per operand) of the tiling and loop order with the least DRAM energy.

    ``*_ratio`` scale stored sizes for compressed operands. Raises :class:`MappingError` if even the
    smallest tile does not fit ``acc.glb_bytes``.
    """
    order, mt, pt, ct, wbits, ibits, obits, first, last = tiling_bits(
        layer, acc, weight_ratio=weight_ratio, input_ratio=input_ratio, psum_bits=psum_bits)
    energy = (wbits + ibits + obits) / acc.word_bits * (acc.energy.dram + acc.energy.glb)
    return {"energy": energy, "m_tile": mt, "p_tile": pt, "c_tile": ct, "order": order, "weight_bits": wbits,
            "input_bits": ibits, "output_bits": obits, "first_tile_bits": first, "last_tile_bits": last}


def clear_caches() -> None:
    """Forget the cached candidate grids and tilings."""
    _grid.cache_clear()
    _best.cache_clear()

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

__all__ = ["MAX_TILING_CANDIDATES", "clear_caches", "dram_tiling", "tiling_bits", "tilings_bits"]

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
    p_first: np.ndarray       # indices of the candidates with the smallest p tile


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
              m_first=np.flatnonzero(mt == mt.min()), p_first=np.flatnonzero(pt == pt.min()))
    for a in g.__dict__.values():
        a.setflags(write=False)
    return g


def _shape_key(layer: LayerShape) -> tuple[int, int, int, int, int, int, int, int, bool]:
    return (layer.filters_per_group, layer.channels_per_group, layer.batch * layer.out_h, layer.out_w,
            layer.kernel_h, layer.kernel_w, layer.stride, layer.in_w + 2 * layer.padding, layer.kind == "pool")


@dataclass(frozen=True)
class _Stack:
    """The candidate grids of several layers side by side, with the slices each traffic case scores."""

    starts: np.ndarray                    # (L + 1,) first candidate of each layer
    layer_of: np.ndarray                  # (N,)
    grid: dict[str, np.ndarray]           # the _Grid fields, concatenated
    cases: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]  # per case: indices, their layer, segment starts


_FIELDS = ("mt", "pt", "ct", "n_m", "n_p", "spills", "spill_factor", "wt_elems", "in_elems", "out_elems",
           "base_i_elems")
_STACKS: dict[tuple[object, ...], _Stack] = {}
_BEST: dict[tuple[object, ...], tuple[int, int, int, int, float, float, float, float, float] | int] = {}
_CACHE_MAX = 65536


def _stack(keys: tuple[tuple[int, int, int, int, int, int, int, int, bool], ...]) -> _Stack:
    st = _STACKS.get(keys)
    if st is not None:
        return st
    grids = [_grid(*k) for k in keys]
    sizes = np.array([g.mt.shape[0] for g in grids], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    # With c innermost the traffic does not depend on the c tile and with m innermost not on the m tile, so
    # there only the smallest such tile (smallest footprint and first load, first index) can win; with p
    # innermost the inputs grow with the number of p tiles only through the halo rows, so when the kernel is
    # no taller than the stride (r <= stride) the smallest p tile cannot lose either.
    slices = (
        [g.c_first for g in grids],
        [g.p_first if k[4] <= k[6] else np.arange(g.mt.shape[0]) for g, k in zip(grids, keys, strict=True)],
        [g.m_first for g in grids])
    cases = []
    for per_layer in slices:
        idx = np.concatenate([ix + starts[j] for j, ix in enumerate(per_layer)])
        n = np.array([ix.shape[0] for ix in per_layer], dtype=np.int64)
        cases.append((idx, np.repeat(np.arange(len(keys)), n), np.concatenate([[0], np.cumsum(n)[:-1]])))
    st = _Stack(starts=starts, layer_of=np.repeat(np.arange(len(keys)), sizes),
                grid={f: np.concatenate([getattr(g, f) for g in grids]) for f in _FIELDS}, cases=tuple(cases))
    if len(_STACKS) >= 1024:
        _STACKS.clear()
    _STACKS[keys] = st
    return st


def _best_many(keys: tuple[tuple[int, int, int, int, int, int, int, int, bool], ...], groups: list[int],
               wb: np.ndarray, ab: np.ndarray, act: np.ndarray, psum: np.ndarray, glb_bits: int,
               ) -> list[tuple[int, int, int, int, float, float, float, float, float] | int]:
    """For each layer the best tiling's ``(case, m_tile, p_tile, c_tile, weight, input, output bits, first
    tile's weight + input bits, last output tile's bits)``, or the bytes its smallest tile needs when none
    fits; all layers' candidates are scored together."""
    st = _stack(keys)
    g, lo = st.grid, st.layer_of
    foot = g["wt_elems"] * wb[lo] + g["in_elems"] * ab[lo] + g["out_elems"] * psum[lo]
    fits = foot <= glb_bits
    seg = st.starts[:-1]
    fit_any = np.logical_or.reduceat(fits, seg)
    base_w = np.array([0.0 if k[8] else k[0] * k[1] * k[4] * k[5] * w for k, w in zip(keys, wb.tolist(), strict=True)])
    out_vals = np.array([k[0] * k[2] * k[3] for k in keys], dtype=np.float64)
    o_once = out_vals * act
    spill_bits = out_vals * psum
    totals, layers_of, starts_of, idxs = [], [], [], []
    for case, (ix, lx, sx) in enumerate(st.cases):
        bi = g["base_i_elems"][ix] * ab[lx]
        if case == 0:       # c innermost: inputs once per m tile, weights once per p tile, outputs once
            t = base_w[lx] * g["n_p"][ix] + bi * g["n_m"][ix] + o_once[lx]
        elif case == 1:     # p innermost: weights once, inputs once per m tile, partial sums spill
            t = base_w[lx] + bi * g["n_m"][ix] + np.where(g["spills"][ix], spill_bits[lx] * g["spill_factor"][ix],
                                                         o_once[lx])
        else:               # m innermost: weights once per p tile, inputs once, partial sums spill
            t = base_w[lx] * g["n_p"][ix] + bi + np.where(g["spills"][ix], spill_bits[lx] * g["spill_factor"][ix],
                                                         o_once[lx])
        totals.append(np.where(fits[ix], t, np.inf))
        layers_of.append(lx)
        starts_of.append(sx)
        idxs.append(ix)
    least = np.minimum.reduce([np.minimum.reduceat(t, sx) for t, sx in zip(totals, starts_of, strict=True)])
    # among the least-traffic tilings, the one whose first load and last write-back (the transfers double
    # buffering cannot hide) are smallest; then the earlier case, then the smaller tile
    best_exp = np.full(len(keys), np.inf)
    best_case = np.zeros(len(keys), dtype=np.int64)
    best_idx = np.zeros(len(keys), dtype=np.int64)
    for case, (t, lx, sx, ix) in enumerate(zip(totals, layers_of, starts_of, idxs, strict=True)):
        exposure = g["wt_elems"][ix] * wb[lx] + g["in_elems"][ix] * ab[lx] + g["out_elems"][ix] * act[lx]
        e = np.where(t == least[lx], exposure, np.inf)
        e_min = np.minimum.reduceat(e, sx)
        first = np.minimum.reduceat(np.where(e == e_min[lx], np.arange(e.shape[0]), e.shape[0]), sx)
        better = e_min < best_exp
        best_exp = np.where(better, e_min, best_exp)
        best_case = np.where(better, case, best_case)
        best_idx = np.where(better, ix[np.minimum(first, e.shape[0] - 1)], best_idx)
    out: list[tuple[int, int, int, int, float, float, float, float, float] | int] = []
    for j in range(len(keys)):
        if not fit_any[j]:
            out.append(int(np.ceil(foot[st.starts[j]:st.starts[j + 1]].min() / 8)))
            continue
        b, case = int(best_idx[j]), int(best_case[j])
        n_p, n_m = float(g["n_p"][b]), float(g["n_m"][b])
        a_b, w_b = float(ab[j]), float(wb[j])
        base_i = float(g["base_i_elems"][b] * a_b)
        once = float(o_once[j])
        o_spill = float(spill_bits[j]) * float(g["spill_factor"][b]) if g["spills"][b] else once
        bw = float(base_w[j])
        w, i, o = ((bw * n_p, base_i * n_m, once), (bw, base_i * n_m, o_spill), (bw * n_p, base_i, o_spill))[case]
        first_bits = float(g["wt_elems"][b] * w_b + g["in_elems"][b] * a_b)
        last_bits = float(g["out_elems"][b] * float(act[j]))
        out.append((case, int(g["mt"][b]), int(g["pt"][b]), int(g["ct"][b]), w * groups[j], i * groups[j],
                    o * groups[j], first_bits, last_bits))
    return out


def tilings_bits(layers: list[tuple[LayerShape, float, float, int]], acc: Accelerator,
                 ) -> list[tuple[str, int, int, int, float, float, float, float, float]]:
    """:func:`tiling_bits` of several ``(layer, weight_ratio, input_ratio, psum_bits)`` at once: unless every
    layer is in the cache, all are searched together."""
    glb_bits = acc.glb_bytes * 8
    found: list[tuple[int, int, int, int, float, float, float, float, float] | int | None] = []
    missing: list[int] = []
    ckeys = []
    for j, (layer, wr, ir, pb) in enumerate(layers):
        key = _shape_key(layer)
        ckey = (key, layer.groups, layer.weight_bits * wr, layer.act_bits * ir, layer.act_bits, pb, glb_bits)
        ckeys.append(ckey)
        hit = _BEST.get(ckey)
        found.append(hit)
        if hit is None:
            size = len(distinct_ceils(key[0])) * len(distinct_ceils(key[1])) * len(distinct_ceils(key[2]))
            if size > MAX_TILING_CANDIDATES:
                raise MappingError(f"layer {layer.name!r} has {size} DRAM tiling candidates (tile sizes of "
                                   f"{key[0]} filters x {key[2]} output rows x {key[1]} channels); at most "
                                   f"{MAX_TILING_CANDIDATES} are searched: split the batch or the layer")
            missing.append(j)
    if missing:
        # all layers are searched together (one stacked grid per workload shape, cached), hits included
        res = _best_many(tuple(c[0] for c in ckeys), [c[1] for c in ckeys], np.array([c[2] for c in ckeys]),
                         np.array([c[3] for c in ckeys]), np.array([c[4] for c in ckeys], dtype=np.float64),
                         np.array([c[5] for c in ckeys], dtype=np.float64), glb_bits)
        if len(_BEST) + len(res) > _CACHE_MAX:
            _BEST.clear()
        for j, r in enumerate(res):
            _BEST[ckeys[j]] = r
            found[j] = r
    out = []
    for (layer, _wr, _ir, _pb), best in zip(layers, found, strict=True):
        if isinstance(best, int):
            raise MappingError(f"layer {layer.name!r} fits no tiling: its smallest tile needs {best} bytes of "
                               f"global buffer but glb_bytes = {acc.glb_bytes}")
        assert best is not None
        case, mt, pt, ct, wbits, ibits, obits, first, last = best
        out.append((_CASE_ORDER[case], mt, pt, ct, wbits, ibits, obits, first, last))
    return out


def tiling_bits(layer: LayerShape, acc: Accelerator, *, weight_ratio: float = 1.0, input_ratio: float = 1.0,
                psum_bits: int = 16) -> tuple[str, int, int, int, float, float, float, float, float]:
    """``(order, m_tile, p_tile, c_tile, weight_bits, input_bits, output_bits, first_bits, last_bits)`` of the
    least-traffic tiling (cached per layer shape, bit widths and buffer size): DRAM traffic per operand, the
    first tile's weights and inputs (loaded before compute can start) and the last output tile (written
    after it ends)."""
    return tilings_bits([(layer, weight_ratio, input_ratio, psum_bits)], acc)[0]


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
    _STACKS.clear()
    _BEST.clear()

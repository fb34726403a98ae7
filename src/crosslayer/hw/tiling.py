"""DRAM tiling of one layer: the tile sizes and loop order that move the fewest bits through DRAM.

The layer's loops over output channels (m), output rows (p, batch stacked) and input channels (c) are
tiled so that one weight, input and output tile fit the global buffer together; the three tile loops
run in one of six orders. Reuse analysis (the loop-nest rule of Timeloop, Parashar et al., ISPASS 2019,
and of Eyeriss's own analysis): an operand is re-fetched from DRAM once per iteration of every loop it
does not depend on that sits outside its innermost dependent loop; outputs whose reduction loop (c) is
outside spill partial sums (write + read back).

With three loops each operand depends on two, so only the innermost loop matters: the operand that does
not depend on it is re-fetched once per iteration of the one loop it lacks, the other two are fetched
once. The six orders therefore fall into three traffic cases (innermost c, p or m), searched over every
tile-size candidate ``ceil(D / k)``. Among the tilings with the least traffic the search keeps the one whose
first tile (weights + inputs) and last output tile are smallest (the two transfers double buffering cannot
hide behind compute), then the earlier case, then the earlier candidate.
:mod:`crosslayer.hw.tiling_grid` scores every candidate under every case; this module finds the same tiling
while scoring only the candidates that can win, for all layers of a workload at once:

* c innermost: the traffic does not depend on the c tile, which only adds footprint and first load, so only
  the smallest c tile (1) is scored, for every (m, p) tile pair;
* m innermost: likewise only the smallest m tile (1), and for each p tile only the largest c tile that
  fits: fewer c tiles spill fewer partial sums (at least two outputs' worth less), and the rest of the
  traffic does not depend on c;
* p innermost: for each (m, p) tile pair only the largest c tile that fits, for the same reason; when the
  kernel is no taller than the stride only the smallest p tile (more p tiles re-read no halo rows).

The largest fitting c tile of each (m, p) pair comes from the buffer constraint solved for c, corrected
against the exact footprint so that it agrees with the exhaustive test bit for bit. A layer whose traffic is
so large that rounding could blur the two-outputs margin (far beyond real layers) is searched
exhaustively. What depends only on the layers' shapes is cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crosslayer.hw.accelerator import Accelerator
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerShape, distinct_ceils
from crosslayer.hw.tiling_grid import ShapeKey, Tiling, exhaustive_tilings, grid

__all__ = ["MAX_TILING_CANDIDATES", "TilingArrays", "clear_caches", "dram_tiling", "shape_key", "tiling_arrays",
           "tiling_bits", "tilings_bits"]

MAX_TILING_CANDIDATES = 1 << 20   # the exhaustive grid stays ~100 MB; real layers need well under 10^5

# innermost loop -> the first of the six orders (itertools.permutations("mpc")) with that innermost loop
CASE_ORDER = ("mpc", "mcp", "pcm")   # innermost c, p, m
# traffic bound / two outputs' partial sums above which a layer is searched exhaustively (rounding safety:
# float64 keeps the margin exactly up to ~2^50)
EXACT_RATIO_LIMIT = 2.0 ** 40
_KEY_STRIDE = 1 << 21               # > any channel count: per-layer offsets of the c candidates


def shape_key(layer: LayerShape) -> ShapeKey:
    return (layer.filters_per_group, layer.channels_per_group, layer.batch * layer.out_h, layer.out_w,
            layer.kernel_h, layer.kernel_w, layer.stride, layer.in_w + 2 * layer.padding, layer.kind == "pool")


@dataclass(frozen=True, eq=False)
class _Stack:
    """The (m tile, p tile) pairs of several layers side by side (m-major per layer) with every layer's c tile
    candidates, and the *entries* the three cases score: per layer its c-innermost pairs (c tile 1), then its
    p-innermost pairs, then its m-innermost pairs (largest fitting c tile), which is the tie-break order."""

    # per pair
    layer_of: np.ndarray
    c_lo: np.ndarray          # first c candidate of the pair's layer (index into c_cand)
    c_hi: np.ndarray          # one past its last
    c_max: np.ndarray         # the layer's channels per group (as float)
    key_off: np.ndarray       # layer * _KEY_STRIDE
    c_of: np.ndarray          # channels per group of the pair's layer
    wt1: np.ndarray           # weight tile elements per c-tile channel (0 for pooling)
    in1: np.ndarray           # input tile elements per c-tile channel
    out: np.ndarray           # output tile elements
    # per c candidate
    c_cand: np.ndarray        # every layer's c tile candidates, layer after layer
    c_keys: np.ndarray        # c_cand + layer * _KEY_STRIDE (sorted)
    # per entry
    pair: np.ndarray
    layer: np.ndarray
    case: np.ndarray
    big_c: np.ndarray         # scored with the pair's largest fitting c tile (else with c tile 1)
    w_times: np.ndarray       # weight reads: n_p (c or m innermost) or 1
    i_times: np.ndarray       # input reads: n_m (c or p innermost) or 1
    base_i: np.ndarray        # input elements read by all p tiles once
    mt: np.ndarray
    pt: np.ndarray
    wt1_e: np.ndarray
    in1_e: np.ndarray
    out_e: np.ndarray
    starts: np.ndarray        # (L,) first entry of each layer
    first_pair: np.ndarray    # (L,) each layer's (1, 1) pair: the smallest footprint
    # per layer
    weights: np.ndarray       # m * c * r * s (0 for pooling)
    out_vals: np.ndarray      # m * pp * qq, float
    bound_w: np.ndarray       # the most weight and input reads any tiling makes (the exactness check)
    bound_i: np.ndarray
    c_of_layer: np.ndarray


_STACKS: dict[tuple[ShapeKey, ...], _Stack] = {}
_MEMO: dict[tuple[object, ...], tuple[np.ndarray, ...]] = {}
_CACHE_MAX = 1024


def _stack(keys: tuple[ShapeKey, ...]) -> _Stack:
    st_ = _STACKS.get(keys)
    if st_ is not None:
        return st_
    pairs: dict[str, list[np.ndarray]] = {f: [] for f in ("layer_of", "c_lo", "c_hi", "c_of", "wt1", "in1", "out")}
    ent: dict[str, list[np.ndarray]] = {f: [] for f in ("pair", "case", "w_times", "i_times", "base_i", "mt", "pt")}
    c_cand, starts, first_pair, bound_i = [], [], [], []
    n_pairs = n_c = n_ent = 0
    for j, (m, c, pp, qq, r, s, st, w_in, pool) in enumerate(keys):
        a, b, e = (np.array(distinct_ceils(d), dtype=np.int64) for d in (m, pp, c))
        mt, pt = np.repeat(a, b.size), np.tile(b, a.size)
        n_m, n_p = -(-m // mt), -(-pp // pt)
        size = mt.size
        base_i = c * w_in * (st * (pp - n_p) + n_p * r)
        for f, v in (("layer_of", j), ("c_lo", n_c), ("c_hi", n_c + e.size), ("c_of", c),
                     ("wt1", 0 if pool else mt * r * s), ("in1", ((pt - 1) * st + r) * w_in), ("out", mt * pt * qq)):
            pairs[f].append(np.broadcast_to(np.asarray(v, dtype=np.int64), (size,)))
        # c innermost: every pair; p innermost: every pair, or those with p tile 1 when r <= stride; m innermost:
        # the pairs with m tile 1
        sel = (np.arange(size), np.arange(a.size) * b.size if r <= st else np.arange(size), np.arange(b.size))
        ones = np.ones(size, dtype=np.int64)
        for case, ix in enumerate(sel):
            ent["pair"].append(n_pairs + ix)
            ent["case"].append(np.full(ix.size, case))
            ent["w_times"].append((ones if case == 1 else n_p)[ix])
            ent["i_times"].append((ones if case == 2 else n_m)[ix])
            for f, v in (("base_i", base_i), ("mt", mt), ("pt", pt)):
                ent[f].append(v[ix])
        c_cand.append(e)
        starts.append(n_ent)
        first_pair.append(n_pairs)
        bound_i.append(int(base_i.max()) * m)
        n_ent = starts[-1] + sum(x.size for x in sel)
        n_pairs += size
        n_c += e.size
    pa = {f: np.concatenate(v) for f, v in pairs.items()}
    en = {f: np.concatenate(v).astype(np.int64) for f, v in ent.items()}
    for f in ("w_times", "i_times", "base_i"):     # only ever multiplied with floats: converted once (exactly)
        en[f] = en[f].astype(np.float64)
    cand = np.concatenate(c_cand)
    sizes = np.diff(np.array([*starts, n_ent]))
    stack = _Stack(
        **pa, c_max=pa["c_of"].astype(np.float64), key_off=pa["layer_of"] * _KEY_STRIDE, c_cand=cand,
        c_keys=cand + np.repeat(np.arange(len(keys), dtype=np.int64), [x.size for x in c_cand]) * _KEY_STRIDE,
        **en, layer=np.repeat(np.arange(len(keys)), sizes), big_c=en["case"] > 0, wt1_e=pa["wt1"][en["pair"]],
        in1_e=pa["in1"][en["pair"]], out_e=pa["out"][en["pair"]], starts=np.array(starts),
        first_pair=np.array(first_pair),
        weights=np.array([0 if k[8] else k[0] * k[1] * k[4] * k[5] for k in keys], dtype=np.int64),
        out_vals=np.array([float(k[0] * k[2] * k[3]) for k in keys]), bound_w=np.array([k[2] for k in keys]),
        bound_i=np.array(bound_i, dtype=np.float64), c_of_layer=np.array([k[1] for k in keys]))
    for arr in stack.__dict__.values():
        arr.setflags(write=False)
    if len(_STACKS) >= _CACHE_MAX:
        _STACKS.clear()
    _STACKS[keys] = stack
    return stack


def _largest_fitting_c(g: _Stack, wb: np.ndarray, ab: np.ndarray, out_bits: np.ndarray, glb_bits: int,
                       ) -> np.ndarray:
    """Index into ``g.c_cand`` of each pair's largest fitting c tile (``c_lo - 1`` when none fits): the buffer
    constraint solved for c, then moved until the footprint, computed as the exhaustive search computes it,
    fits at the index and not one above (the footprint grows with the c tile, so this is the boundary)."""
    est = np.floor(np.clip((glb_bits - out_bits) / (g.wt1 * wb + g.in1 * ab), 0.0, g.c_max)).astype(np.int64)
    k = np.searchsorted(g.c_keys, g.key_off + est, side="right") - 1
    top = g.c_hi - 1

    def fits(ix: np.ndarray) -> np.ndarray:
        ct = g.c_cand[ix]
        return (g.wt1 * ct) * wb + (g.in1 * ct) * ab + out_bits <= glb_bits

    while True:
        up = (k < top) & fits(np.minimum(k + 1, top))
        down = (k >= g.c_lo) & ~fits(np.maximum(k, g.c_lo))
        if not (up.any() or down.any()):
            return k
        k = k + up - down


@dataclass(frozen=True, eq=False)
class TilingArrays:
    """The best tiling of each layer as arrays (``case`` indexes :data:`CASE_ORDER`): tile sizes, DRAM bits per
    operand (all groups), the first tile's weight + input bits and the last output tile's bits."""

    case: np.ndarray
    m_tile: np.ndarray
    p_tile: np.ndarray
    c_tile: np.ndarray
    weight_bits: np.ndarray
    input_bits: np.ndarray
    output_bits: np.ndarray
    first_bits: np.ndarray
    last_bits: np.ndarray

    def row(self, j: int) -> tuple[str, int, int, int, float, float, float, float, float]:
        return (CASE_ORDER[int(self.case[j])], int(self.m_tile[j]), int(self.p_tile[j]), int(self.c_tile[j]),
                float(self.weight_bits[j]), float(self.input_bits[j]), float(self.output_bits[j]),
                float(self.first_bits[j]), float(self.last_bits[j]))


def _search(g: _Stack, wb: np.ndarray, ab: np.ndarray, act: np.ndarray, psum: np.ndarray, glb_bits: int,
            ) -> tuple[np.ndarray, ...]:
    lo = g.layer_of
    out_bits = g.out * psum[lo]
    k = _largest_fitting_c(g, wb[lo], ab[lo], out_bits, glb_bits)
    fit = k >= g.c_lo
    ct = g.c_cand[np.maximum(k, g.c_lo)]
    n_c = -(-g.c_of // ct)
    once = g.out_vals * act
    spill = np.where(n_c > 1, (g.out_vals * psum)[lo] * (2.0 * n_c - 1.0), once[lo])
    # every entry's traffic as the exhaustive search writes it (a factor 1 changes no bit)
    e, el = g.pair, g.layer
    w = (g.weights * wb)[el] * g.w_times
    i = g.base_i * ab[el] * g.i_times
    o = np.where(g.big_c, spill[e], once[el])
    t = np.where(fit[e], w + i + o, np.inf)
    least = np.minimum.reduceat(t, g.starts)
    # the tie-break (first tile + last output tile, then the first entry) on the least-traffic entries only
    tied = np.flatnonzero(t == least[el])
    et, lt = e[tied], el[tied]
    c_tied = np.where(g.big_c[tied], ct[et], 1)
    first_t = (g.wt1_e[tied] * c_tied) * wb[lt] + (g.in1_e[tied] * c_tied) * ab[lt]
    exposure = first_t + g.out_e[tied] * act[lt]
    seg = np.searchsorted(tied, g.starts)          # each layer's first tied entry (every layer has one)
    e_min = np.minimum.reduceat(exposure, seg)
    pos = np.minimum.reduceat(np.where(exposure == e_min[lt], np.arange(tied.shape[0]), tied.shape[0]), seg)
    pos = np.minimum(pos, tied.shape[0] - 1)
    b = tied[pos]
    first = first_t[pos]
    c_tile = c_tied[pos]
    s0 = g.first_pair
    need = g.wt1[s0] * wb + g.in1[s0] * ab + out_bits[s0]     # smallest footprint (reported when none fits)
    return (g.case[b], g.mt[b], g.pt[b], c_tile, w[b], i[b], o[b], first, g.out_e[b] * act, fit[s0], need)


def tiling_arrays(layers: list[tuple[LayerShape, float, float, int]], acc: Accelerator) -> TilingArrays:
    """The least-traffic tiling of each ``(layer, weight_ratio, input_ratio, psum_bits)`` (stored fractions of
    the dense weights / inputs, partial-sum bits), all searched at once; identical to the exhaustive search.
    Raises :class:`MappingError` for the first layer whose grid is too large or that fits no tiling."""
    keys = tuple(shape_key(layer) for layer, _w, _i, _p in layers)
    for (layer, _w, _i, _p), key in zip(layers, keys, strict=True):
        size = len(distinct_ceils(key[0])) * len(distinct_ceils(key[1])) * len(distinct_ceils(key[2]))
        if size > MAX_TILING_CANDIDATES:
            raise MappingError(f"layer {layer.name!r} has {size} DRAM tiling candidates (tile sizes of {key[0]} "
                               f"filters x {key[2]} output rows x {key[1]} channels); at most {MAX_TILING_CANDIDATES} "
                               "are searched: split the batch or the layer")
    wb = np.array([layer.weight_bits * wr for layer, wr, _i, _p in layers])
    ab = np.array([layer.act_bits * ir for layer, _w, ir, _p in layers])
    act = np.array([float(layer.act_bits) for layer, _w, _i, _p in layers])
    psum = np.array([float(p) for _l, _w, _i, p in layers])
    groups = np.array([layer.groups for layer, _w, _i, _p in layers])
    return search_tilings(keys, groups, wb, ab, act, psum, acc.glb_bytes * 8, [layer.name for layer, *_ in layers],
                          acc.glb_bytes)


def search_tilings(keys: tuple[ShapeKey, ...], groups: np.ndarray, wb: np.ndarray, ab: np.ndarray, act: np.ndarray,
                   psum: np.ndarray, glb_bits: int, names: list[str], glb_bytes: int) -> TilingArrays:
    """:func:`tiling_arrays` on prepared arrays (stored bits per weight / input, output and partial-sum bits);
    the grid size is checked by the caller. Results are memoised per configuration."""
    memo_key = (keys, glb_bits, wb.tobytes(), ab.tobytes(), act.tobytes(), psum.tobytes())
    res = _MEMO.get(memo_key)
    if res is None:
        g = _stack(keys)
        res = _search(g, wb, ab, act, psum, glb_bits)
        # an upper bound of any candidate's traffic against the partial sums of two outputs' worth
        spill_bits = g.out_vals * psum
        bound = g.weights * wb * g.bound_w + g.bound_i * ab + spill_bits * (2.0 * g.c_of_layer + 1.0)
        risky = np.flatnonzero(~(bound < spill_bits * EXACT_RATIO_LIMIT))
        if risky.size:
            res = _patch_exhaustive(res, keys, wb, ab, act, psum, glb_bits, risky)
        if len(_MEMO) >= _CACHE_MAX * 16:
            _MEMO.clear()
        _MEMO[memo_key] = res
    case, mt, pt, ct, w, i, o, first, last, fit_any, need = res
    if not fit_any.all():
        j = int(np.flatnonzero(~fit_any)[0])
        raise MappingError(f"layer {names[j]!r} fits no tiling: its smallest tile needs {int(np.ceil(need[j] / 8))} "
                           f"bytes of global buffer but glb_bytes = {glb_bytes}")
    return TilingArrays(case=case, m_tile=mt, p_tile=pt, c_tile=ct, weight_bits=w * groups, input_bits=i * groups,
                        output_bits=o * groups, first_bits=first, last_bits=last)


def _patch_exhaustive(res: tuple[np.ndarray, ...], keys: tuple[ShapeKey, ...], wb: np.ndarray, ab: np.ndarray,
                      act: np.ndarray, psum: np.ndarray, glb_bits: int, layers: np.ndarray) -> tuple[np.ndarray, ...]:
    """``res`` with the given layers searched exhaustively (per-group bits, as :func:`_search` gives them)."""
    out = [a.copy() for a in res]
    for j in layers.tolist():
        t: Tiling = exhaustive_tilings((keys[j],), [1], wb[j:j + 1], ab[j:j + 1], act[j:j + 1],
                                       psum[j:j + 1], glb_bits)[0]
        if isinstance(t, int):
            out[9][j] = False
            out[10][j] = float(t) * 8
            continue
        out[9][j] = True
        for f, v in enumerate(t):
            out[f][j] = v
    return tuple(out)


def tilings_bits(layers: list[tuple[LayerShape, float, float, int]], acc: Accelerator,
                 ) -> list[tuple[str, int, int, int, float, float, float, float, float]]:
    """:func:`tiling_bits` of several ``(layer, weight_ratio, input_ratio, psum_bits)`` at once."""
    arrays = tiling_arrays(layers, acc)
    return [arrays.row(j) for j in range(len(layers))]


def tiling_bits(layer: LayerShape, acc: Accelerator, *, weight_ratio: float = 1.0, input_ratio: float = 1.0,
                psum_bits: int = 16) -> tuple[str, int, int, int, float, float, float, float, float]:
    """``(order, m_tile, p_tile, c_tile, weight_bits, input_bits, output_bits, first_bits, last_bits)`` of the
    least-traffic tiling: DRAM traffic per operand, the first tile's weights and inputs (loaded before compute
    can start) and the last output tile (written after it ends)."""
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
    """Forget the cached pair tables, candidate grids and tilings."""
    _STACKS.clear()
    _MEMO.clear()
    grid.cache_clear()

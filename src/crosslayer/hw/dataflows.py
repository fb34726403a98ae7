"""Array-level access counts and cycles of one layer under a dataflow (the PE array and its buffer).

Counts are per operand ("weight", "input", "output") and per level ("glb", "noc", "rf"), in values (the
energy model converts values to words by bit width). Conventions shared by every dataflow:

* every MAC reads its two operands from PE-local registers (RF: 2 accesses per MAC);
* a partial sum kept in the PE costs an RF read and write per MAC (OS, RS); a partial sum passed to the
  neighbour costs one inter-PE hop per MAC (WS, IS);
* a streamed operand arrives by one inter-PE hop per MAC; a stationary one is loaded once per fold.

WS / OS / IS use the GEMM view and the fold structure of :mod:`crosslayer.hw.systolic` (Samajdar et al.,
ISPASS 2020; Chen et al., ISCA 2016, Sec. IV for the taxonomy). RS follows Eyeriss (Chen et al., ISCA 2016,
Sec. V): a logical PE set of filter rows (R) x output rows (E) runs 1-D row convolutions; a PE keeps
``p`` filter rows of ``q`` channels, ``q`` input row windows and ``p`` partial sums in its RF; sets are
replicated ``t`` times vertically (channel groups, summed over the NoC) and ``u`` times horizontally
(filter groups sharing the input).

:func:`option_table` gives every mapping option of a layer under a dataflow as arrays (one column per
option; RS has one per RF mapping ``(p, q)``), cached per layer geometry and array size, so the cost model
scores all options with a few NumPy operations; :func:`array_counts` is one column of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from crosslayer.hw.accelerator import Accelerator
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerShape, ceil_div, distinct_ceils
from crosslayer.hw.systolic import gemm_timing

__all__ = ["LEVELS_BELOW_DRAM", "OPERANDS", "ArrayCounts", "OptionTable", "array_counts", "clear_caches",
           "option_table", "rs_candidates", "rs_fits"]

LEVELS_BELOW_DRAM = ("glb", "noc", "rf")
OPERANDS = ("weight", "input", "output")
Counts = dict[str, dict[str, float]]


@dataclass(frozen=True)
class ArrayCounts:
    """Accesses below DRAM, the dense compute cycles and how the array's lanes are shared."""

    counts: Counts              # level -> operand -> values
    stream_cycles: int          # cycles spent streaming (scaled by zero-skipping)
    overhead_cycles: int        # fill / drain / operand latch cycles (not scaled)
    filter_lanes: int           # filters processed side by side (weight-skip load imbalance); 0 = temporal
    parallel_pes: int           # PEs working in parallel on different operands
    temporal_length: int        # values streamed per fold per lane (activation-skip imbalance)
    mapping: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class OptionTable:
    """Every mapping option of one layer under one dataflow, one column per option (read-only arrays).

    ``counts[level, operand]`` are values accessed at ``LEVELS_BELOW_DRAM`` x ``OPERANDS``; ``rs_p`` /
    ``rs_q`` the RS register-file mapping of each column (empty for the other dataflows); ``classes`` numbers
    the distinct count columns (columns with equal counts share a class and so an energy).
    """

    dataflow: str
    counts: np.ndarray            # (3, 3, K) int64
    stream_cycles: np.ndarray     # (K,)
    overhead_cycles: np.ndarray
    filter_lanes: np.ndarray
    parallel_pes: np.ndarray
    temporal_length: np.ndarray
    mapping: dict[str, np.ndarray]
    rs_p: np.ndarray
    rs_q: np.ndarray
    classes: np.ndarray
    n_classes: int

    @property
    def size(self) -> int:
        return int(self.stream_cycles.shape[0])

    def column(self, k: int) -> ArrayCounts:
        """Option ``k`` as :class:`ArrayCounts`."""
        c = {lvl: {op: int(self.counts[i, j, k]) for j, op in enumerate(OPERANDS)}
             for i, lvl in enumerate(LEVELS_BELOW_DRAM)}
        return ArrayCounts(counts=c, stream_cycles=int(self.stream_cycles[k]),  # type: ignore[arg-type]
                           overhead_cycles=int(self.overhead_cycles[k]), filter_lanes=int(self.filter_lanes[k]),
                           parallel_pes=int(self.parallel_pes[k]), temporal_length=int(self.temporal_length[k]),
                           mapping={name: int(v[k]) for name, v in self.mapping.items()})


def _table(dataflow: str, counts: dict[tuple[str, str], np.ndarray | int], size: int, *, stream: object,
           overhead: object, lanes: object, pes: object, temporal: object, mapping: dict[str, object],
           rs_p: np.ndarray | None = None, rs_q: np.ndarray | None = None) -> OptionTable:
    def col(v: object) -> np.ndarray:
        a = v.astype(np.int64) if isinstance(v, np.ndarray) else np.full(size, v, dtype=np.int64)
        a.setflags(write=False)
        return a

    cnt = np.zeros((3, 3, size), dtype=np.int64)
    for (lvl, op), v in counts.items():
        cnt[LEVELS_BELOW_DRAM.index(lvl), OPERANDS.index(op)] = v
    cnt.setflags(write=False)
    classes = _count_classes(cnt.reshape(9, size))
    empty = np.zeros(0, dtype=np.int64)
    return OptionTable(dataflow=dataflow, counts=cnt, stream_cycles=col(stream), overhead_cycles=col(overhead),
                       filter_lanes=col(lanes), parallel_pes=col(pes), temporal_length=col(temporal),
                       mapping={k: col(v) for k, v in mapping.items()},
                       rs_p=empty if rs_p is None else col(rs_p), rs_q=empty if rs_q is None else col(rs_q),
                       classes=classes, n_classes=int(classes.max()) + 1 if size else 0)


def _count_classes(counts: np.ndarray) -> np.ndarray:
    """Class of each column of ``counts`` (9, K): equal columns share a class, numbered in sorted order."""
    size = counts.shape[1]
    if size <= 1:
        out = np.zeros(size, dtype=np.int64)
    else:
        order = np.lexsort(counts[::-1])
        ordered = counts[:, order]
        new = np.ones(size, dtype=bool)
        new[1:] = (ordered[:, 1:] != ordered[:, :-1]).any(axis=0)
        out = np.empty(size, dtype=np.int64)
        out[order] = np.cumsum(new) - 1
    out.setflags(write=False)
    return out


def _gemm_table(layer: LayerShape, dataflow: str, acc: Accelerator) -> OptionTable:
    g, sr, t, sc = layer.gemm()
    tm = gemm_timing(dataflow, sr, t, sc, acc.rows, acc.cols, systolic=acc.kind == "systolic")
    macs = sr * t * sc
    out = sr * sc
    fr, fc = tm.row_folds, tm.col_folds
    c: dict[tuple[str, str], np.ndarray | int] = {("rf", "weight"): macs, ("rf", "input"): macs}
    if dataflow == "OS":                               # rows <- Sr, cols <- Sc
        c.update({("glb", "input"): sr * t * fc, ("glb", "weight"): t * sc * fr, ("glb", "output"): out,
                  ("noc", "input"): macs, ("noc", "weight"): macs,
                  ("noc", "output"): out,               # drain hop
                  ("rf", "output"): 2 * macs})
        lanes, temporal = min(sc, acc.cols), t
    elif dataflow == "WS":                             # rows <- T, cols <- Sc
        c.update({("glb", "weight"): t * sc, ("glb", "input"): sr * t * fc,
                  ("glb", "output"): out * (2 * fr - 1),   # psum write per row fold, read back between folds
                  ("noc", "weight"): t * sc, ("noc", "input"): macs, ("noc", "output"): macs})
        lanes, temporal = min(sc, acc.cols), sr
    else:                                              # IS: rows <- T, cols <- Sr
        c.update({("glb", "input"): sr * t, ("glb", "weight"): t * sc * fc, ("glb", "output"): out * (2 * fr - 1),
                  ("noc", "input"): sr * t, ("noc", "weight"): macs, ("noc", "output"): macs})
        lanes, temporal = 0, sc
    c = {k: v * g for k, v in c.items()}
    used = min(tm.spatial_rows, acc.rows) * min(tm.spatial_cols, acc.cols)
    return _table(dataflow, c, 1, stream=g * tm.folds * tm.temporal, overhead=g * tm.folds * tm.per_fold_overhead,
                  lanes=lanes, pes=used, temporal=temporal, mapping={"row_folds": fr, "col_folds": fc})


def _rs_table(layer: LayerShape, acc: Accelerator, p: np.ndarray | None = None,
              q: np.ndarray | None = None) -> OptionTable:
    """RS mappings ``(p, q)``; by default every one on the grid of distinct pass counts (only those give
    different counts; the RF-fit test is applied later, per bit widths)."""
    g = layer.groups
    m, c = layer.filters_per_group, layer.channels_per_group
    if p is None or q is None:
        pv, qv = np.array(distinct_ceils(m), dtype=np.int64), np.array(distinct_ceils(c), dtype=np.int64)
        p, q = np.repeat(pv, qv.size), np.tile(qv, pv.size)     # (p, q) grid, p-major
        # what cannot fit the RF even with 1-bit operands never fits (psums need at least acc.psum_bits)
        maybe = p * q * layer.kernel_w + q * layer.kernel_w + p * acc.psum_bits <= acc.rf_bytes * 8
        p, q = p[maybe], q[maybe]
    r, s, st = layer.kernel_h, layer.kernel_w, layer.stride
    pp, qq = layer.batch * layer.out_h, layer.out_w            # output rows (batch stacked), row length
    w_in = layer.in_w + 2 * layer.padding
    folds_r = ceil_div(r, acc.rows)
    r_eff = ceil_div(r, folds_r)
    e = min(pp, acc.cols)
    folds_p = ceil_div(pp, acc.cols)
    t = np.maximum(1, np.minimum(acc.rows // r_eff, -(-c // q)))
    u = np.maximum(1, np.minimum(acc.cols // e, -(-m // p)))
    c_passes = -(-c // (q * t))
    m_passes = -(-m // (p * u))
    passes = folds_r * folds_p * c_passes * m_passes
    macs = m * c * pp * qq * r * s
    weights = m * c * r * s
    out = m * pp * qq
    in_rows = folds_p * ((e - 1) * st + r)
    glb_in = c * w_in * in_rows * m_passes
    noc_w = weights * folds_p * e
    noc_in = glb_in * ceil_div(r_eff, st)
    cnt: dict[tuple[str, str], np.ndarray | int] = {
        ("glb", "weight"): weights * folds_p, ("glb", "input"): glb_in,
        ("glb", "output"): out * (2 * c_passes * folds_r - 1),
        ("noc", "weight"): noc_w, ("noc", "input"): noc_in,
        ("noc", "output"): out * c_passes * folds_r * np.maximum(t * r_eff - 1, 1),
        ("rf", "weight"): macs + noc_w,                             # per-MAC read + fill write
        ("rf", "input"): macs + noc_in, ("rf", "output"): 2 * macs}
    cnt = {k: v * g for k, v in cnt.items()}
    per_pass = p * q * s * qq
    return _table("RS", cnt, p.shape[0], stream=g * passes * per_pass, overhead=g * passes, lanes=u,
                  pes=np.minimum(acc.pes, r_eff * t * e * u), temporal=per_pass,
                  mapping={"p": p, "q": q, "t": t, "u": u, "e": e, "folds_p": folds_p, "folds_r": folds_r},
                  rs_p=p, rs_q=q)


def _pool_table(layer: LayerShape, acc: Accelerator, dataflow: str) -> OptionTable:
    """Pooling on the array: each PE reduces one window; no weights, no dataflow choice."""
    stream = ceil_div(layer.output_count, acc.pes) * layer.kernel_h * layer.kernel_w
    return _table(dataflow, {("glb", "input"): layer.ops, ("glb", "output"): layer.output_count,
                             ("rf", "input"): layer.ops}, 1, stream=stream, overhead=0, lanes=0,
                  pes=min(acc.pes, layer.output_count), temporal=layer.kernel_h * layer.kernel_w, mapping={})


_TABLES: dict[tuple[object, ...], OptionTable] = {}
_TABLES_MAX = 8192


def option_table(layer: LayerShape, acc: Accelerator, dataflow: str) -> OptionTable:
    """Every mapping option of ``layer`` under ``dataflow`` (cached per layer geometry and array shape: the
    counts are in values, so bit widths, densities and energies do not enter)."""
    if dataflow not in acc.dataflows:
        raise MappingError(f"dataflow {dataflow!r} is not supported by accelerator {acc.name!r}; "
                           f"allowed: {', '.join(acc.dataflows)}")
    key = (layer.geometry, acc.rows, acc.cols, acc.kind, acc.rf_bytes, acc.psum_bits, dataflow)
    table = _TABLES.get(key)
    if table is None:
        if layer.kind == "pool":
            table = _pool_table(layer, acc, dataflow)
        elif dataflow == "RS":
            table = _rs_table(layer, acc)
        else:
            table = _gemm_table(layer, dataflow, acc)
        if len(_TABLES) >= _TABLES_MAX:
            _TABLES.clear()
        _TABLES[key] = table
    return table


def clear_caches() -> None:
    """Forget every cached option table (benchmarks time the cold path with it)."""
    _TABLES.clear()


def rs_fits(table: OptionTable, layer: LayerShape, acc: Accelerator, psum_bits: int) -> np.ndarray:
    """Mask of the RS options whose RF working set (``p`` filter rows of ``q`` channels, ``q`` input rows,
    ``p`` psums) fits ``acc.rf_bytes``."""
    s = layer.kernel_w
    p, q = table.rs_p, table.rs_q
    return p * q * s * layer.weight_bits + q * s * layer.act_bits + p * psum_bits <= acc.rf_bytes * 8


def rs_candidates(layer: LayerShape, acc: Accelerator, psum_bits: int) -> Iterator[tuple[int, int]]:
    """Every ``(p, q)`` (filters, channels per PE) whose RF working set fits ``acc.rf_bytes``."""
    table = option_table(layer, acc, "RS") if "RS" in acc.dataflows else _rs_table(layer, acc)
    fit = rs_fits(table, layer, acc, psum_bits)
    yield from zip(table.rs_p[fit].tolist(), table.rs_q[fit].tolist(), strict=True)


def array_counts(layer: LayerShape, dataflow: str, acc: Accelerator, *, rs: tuple[int, int] | None = None,
                 psum_bits: int = 16) -> ArrayCounts:
    """Array-level counts of ``layer`` under ``dataflow`` (``rs = (p, q)`` picks the RS RF mapping)."""
    table = option_table(layer, acc, dataflow)
    if layer.kind == "pool" or dataflow != "RS":
        return table.column(0)
    if rs is None:
        fit = np.flatnonzero(rs_fits(table, layer, acc, psum_bits))
        if fit.size == 0:
            raise MappingError(f"layer {layer.name!r} fits no RS mapping: one filter row of kernel_w = "
                               f"{layer.kernel_w} with its inputs and psum exceeds rf_bytes = {acc.rf_bytes}")
        return table.column(int(fit[0]))
    one = np.array([rs[0]], dtype=np.int64), np.array([rs[1]], dtype=np.int64)
    return _rs_table(layer, acc, *one).column(0)

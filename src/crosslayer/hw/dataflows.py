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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from crosslayer.hw.accelerator import Accelerator
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerShape, ceil_div
from crosslayer.hw.systolic import gemm_timing

__all__ = ["ArrayCounts", "array_counts", "rs_candidates"]

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


def _zero() -> Counts:
    return {lvl: {"weight": 0.0, "input": 0.0, "output": 0.0} for lvl in ("glb", "noc", "rf")}


def _gemm_counts(layer: LayerShape, dataflow: str, acc: Accelerator) -> ArrayCounts:
    g, sr, t, sc = layer.gemm()
    tm = gemm_timing(dataflow, sr, t, sc, acc.rows, acc.cols, systolic=acc.kind == "systolic")
    macs = sr * t * sc
    c = _zero()
    out = sr * sc
    c["rf"]["weight"] = c["rf"]["input"] = macs
    if dataflow == "OS":
        fr, fc = tm.row_folds, tm.col_folds           # rows <- Sr, cols <- Sc
        c["glb"]["input"] = sr * t * fc
        c["glb"]["weight"] = t * sc * fr
        c["glb"]["output"] = out
        c["noc"]["input"] = c["noc"]["weight"] = macs
        c["noc"]["output"] = out                       # drain hop
        c["rf"]["output"] = 2 * macs
        lanes, temporal = min(sc, acc.cols), t
    elif dataflow == "WS":
        fr, fc = tm.row_folds, tm.col_folds           # rows <- T, cols <- Sc
        c["glb"]["weight"] = t * sc
        c["glb"]["input"] = sr * t * fc
        c["glb"]["output"] = out * (2 * fr - 1)        # psum write per row fold, read back between folds
        c["noc"]["weight"] = t * sc
        c["noc"]["input"] = c["noc"]["output"] = macs
        lanes, temporal = min(sc, acc.cols), sr
    else:  # IS
        fr, fc = tm.row_folds, tm.col_folds           # rows <- T, cols <- Sr
        c["glb"]["input"] = sr * t
        c["glb"]["weight"] = t * sc * fc
        c["glb"]["output"] = out * (2 * fr - 1)
        c["noc"]["input"] = sr * t
        c["noc"]["weight"] = c["noc"]["output"] = macs
        lanes, temporal = 0, sc
    for lvl in c.values():
        for k in lvl:
            lvl[k] *= g
    used = min(tm.spatial_rows, acc.rows) * min(tm.spatial_cols, acc.cols)
    return ArrayCounts(counts=c, stream_cycles=g * tm.folds * tm.temporal, overhead_cycles=g * tm.folds *
                       tm.per_fold_overhead, filter_lanes=lanes, parallel_pes=used, temporal_length=temporal,
                       mapping={"row_folds": tm.row_folds, "col_folds": tm.col_folds})


def rs_candidates(layer: LayerShape, acc: Accelerator, psum_bits: int) -> Iterator[tuple[int, int]]:
    """Every ``(p, q)`` (filters, channels per PE) whose RF working set fits ``acc.rf_bytes``."""
    s = layer.kernel_w
    m, c = layer.filters_per_group, layer.channels_per_group
    budget = acc.rf_bytes * 8
    # only the distinct pass counts matter: p = ceil(M / k) and q = ceil(C / k) cover them all
    for p in sorted({ceil_div(m, k) for k in range(1, m + 1)}):
        if p * psum_bits + s * layer.act_bits + s * layer.weight_bits * p > budget:
            break
        for q in sorted({ceil_div(c, k) for k in range(1, c + 1)}):
            if p * q * s * layer.weight_bits + q * s * layer.act_bits + p * psum_bits > budget:
                break
            yield p, q


def _rs_counts(layer: LayerShape, acc: Accelerator, p: int, q: int) -> ArrayCounts:
    g = layer.groups
    m, c = layer.filters_per_group, layer.channels_per_group
    r, s, st = layer.kernel_h, layer.kernel_w, layer.stride
    pp, qq = layer.batch * layer.out_h, layer.out_w            # output rows (batch stacked), row length
    w_in = layer.in_w + 2 * layer.padding
    folds_r = ceil_div(r, acc.rows)
    r_eff = ceil_div(r, folds_r)
    e = min(pp, acc.cols)
    folds_p = ceil_div(pp, acc.cols)
    t = max(1, min(acc.rows // r_eff, ceil_div(c, q)))
    u = max(1, min(acc.cols // e, ceil_div(m, p)))
    c_passes = ceil_div(c, q * t)
    m_passes = ceil_div(m, p * u)
    passes = folds_r * folds_p * c_passes * m_passes
    macs = m * c * pp * qq * r * s
    weights = m * c * r * s
    out = m * pp * qq
    in_rows = folds_p * ((e - 1) * st + r)
    cnt = _zero()
    cnt["glb"]["weight"] = weights * folds_p
    cnt["glb"]["input"] = c * w_in * in_rows * m_passes
    cnt["glb"]["output"] = out * (2 * c_passes * folds_r - 1)
    cnt["noc"]["weight"] = weights * folds_p * e
    cnt["noc"]["input"] = cnt["glb"]["input"] * ceil_div(r_eff, st)
    cnt["noc"]["output"] = out * c_passes * folds_r * max(t * r_eff - 1, 1)
    cnt["rf"]["weight"] = macs + cnt["noc"]["weight"]           # per-MAC read + fill write
    cnt["rf"]["input"] = macs + cnt["noc"]["input"]
    cnt["rf"]["output"] = 2 * macs
    for lvl in cnt.values():
        for k in lvl:
            lvl[k] *= g
    per_pass = p * q * s * qq
    return ArrayCounts(counts=cnt, stream_cycles=g * passes * per_pass, overhead_cycles=g * passes,
                       filter_lanes=u, parallel_pes=min(acc.pes, r_eff * t * e * u),
                       temporal_length=per_pass,
                       mapping={"p": p, "q": q, "t": t, "u": u, "e": e, "folds_p": folds_p, "folds_r": folds_r})


def array_counts(layer: LayerShape, dataflow: str, acc: Accelerator, *, rs: tuple[int, int] | None = None,
                 psum_bits: int = 16) -> ArrayCounts:
    """Array-level counts of ``layer`` under ``dataflow`` (``rs = (p, q)`` picks the RS RF mapping)."""
    if dataflow not in acc.dataflows:
        raise MappingError(f"dataflow {dataflow!r} is not supported by accelerator {acc.name!r}; "
                           f"allowed: {', '.join(acc.dataflows)}")
    if layer.kind == "pool":
        return _pool_counts(layer, acc)
    if dataflow == "RS":
        if rs is None:
            first = next(rs_candidates(layer, acc, psum_bits), None)
            if first is None:
                raise MappingError(f"layer {layer.name!r} fits no RS mapping: one filter row of kernel_w = "
                                   f"{layer.kernel_w} with its inputs and psum exceeds rf_bytes = {acc.rf_bytes}")
            rs = first
        return _rs_counts(layer, acc, *rs)
    return _gemm_counts(layer, dataflow, acc)


def _pool_counts(layer: LayerShape, acc: Accelerator) -> ArrayCounts:
    """Pooling on the array: each PE reduces one window; no weights, no dataflow choice."""
    c = _zero()
    c["glb"]["input"] = layer.ops
    c["glb"]["output"] = layer.output_count
    c["rf"]["input"] = layer.ops
    stream = ceil_div(layer.output_count, acc.pes) * layer.kernel_h * layer.kernel_w
    return ArrayCounts(counts=c, stream_cycles=stream, overhead_cycles=0, filter_lanes=0,
                       parallel_pes=min(acc.pes, layer.output_count),
                       temporal_length=layer.kernel_h * layer.kernel_w, mapping={})

"""Energy and latency of every mapping option of every layer at once (NumPy over all options).

The options of a workload (per layer, per dataflow: one column each; RS has one per register-file
mapping) are laid side by side in one *plan*, which depends only on the layers' geometry and the array
and is cached. One call then scores them all: DRAM traffic from the least-traffic tiling of each layer
(:mod:`crosslayer.hw.tiling`), accesses per level from the option tables (:mod:`crosslayer.hw.dataflows`),
zero-skipping and load imbalance (:mod:`crosslayer.hw.sparsity`), energy per level and latency in cycles:
the first tile's load and the last output tile's write-back (which double buffering cannot hide) plus
max(compute, the rest of the DRAM time, the GLB time). Each (layer, dataflow) keeps its best option under the
objective (the other breaks ties; equal keys keep the first option).
:func:`crosslayer.hw.mapping.layer_cost` turns a chosen option into a
:class:`~crosslayer.hw.mapping.LayerCost`; :func:`crosslayer.hw.network.cost_workload` keeps the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from crosslayer.hw.accelerator import Accelerator, mac_energy
from crosslayer.hw.dataflows import OptionTable, option_table
from crosslayer.hw.errors import HardwareConfigError, MappingError
from crosslayer.hw.shapes import LayerShape
from crosslayer.hw.sparsity import SparsityConfig, compressed_bits, skip_fraction, weight_imbalance
from crosslayer.hw.tiling import tilings_bits

__all__ = ["LEVELS", "Scored", "clear_caches", "score_workload"]

LEVELS = ("dram", "glb", "noc", "rf", "mac")
_DEFAULT_SPARSITY = SparsityConfig()
_COLUMNS = ("stream_cycles", "overhead_cycles", "filter_lanes", "parallel_pes", "temporal_length", "rs_p", "rs_q")


@dataclass(frozen=True, eq=False)
class _Plan:
    """Every option of a workload under some dataflows, segment ``(layer, dataflow)`` after segment."""

    tables: tuple[OptionTable, ...]       # layer-major: tables[layer * D + d]
    starts: np.ndarray                    # (L * D + 1,) first option of each segment
    layer_of: np.ndarray                  # (K,) layer index of each option
    seg_of: np.ndarray                    # (K,) segment of each option
    matrix: np.ndarray                    # (9 + len(_COLUMNS), K): counts (level-major), then _COLUMNS
    is_rs: np.ndarray                     # (K,) an RS option (its RF fit depends on bit widths)
    kernel_w: np.ndarray                  # (K,)


_PLANS: dict[tuple[object, ...], _Plan] = {}
_PLANS_MAX = 1024


def clear_caches() -> None:
    """Forget every cached plan, option table and tiling (benchmarks time the cold path with it)."""
    from crosslayer.hw import dataflows, shapes, tiling

    _PLANS.clear()
    shapes.distinct_ceils.cache_clear()
    dataflows.clear_caches()
    tiling.clear_caches()
    _storage_ratios.cache_clear()
    _weight_imbalance.cache_clear()


def _plan(workload: Sequence[LayerShape], acc: Accelerator, dfs: tuple[str, ...]) -> _Plan:
    key = (tuple(layer.geometry for layer in workload), acc.rows, acc.cols, acc.kind, acc.rf_bytes, acc.psum_bits,
           dfs)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    tables = tuple(option_table(layer, acc, df) for layer in workload for df in dfs)
    d = len(dfs)
    sizes = np.array([t.size for t in tables], dtype=np.int64)
    seg_of = np.repeat(np.arange(len(tables)), sizes)
    rs = [t.dataflow == "RS" and workload[i // d].kind != "pool" for i, t in enumerate(tables)]
    kw = [workload[i // d].kernel_w for i in range(len(tables))]

    def column(t: OptionTable, f: str) -> np.ndarray:
        if f in ("rs_p", "rs_q") and not getattr(t, f).size:
            return np.zeros(t.size, np.int64)
        return np.asarray(getattr(t, f))

    plan = _Plan(tables=tables, starts=np.concatenate([[0], np.cumsum(sizes)]), layer_of=seg_of // d, seg_of=seg_of,
                 matrix=np.concatenate([np.concatenate([t.counts.reshape(9, -1) for t in tables], axis=1),
                                        np.stack([np.concatenate([column(t, f) for t in tables])
                                                  for f in _COLUMNS])]),
                 is_rs=np.repeat(np.array(rs, dtype=bool), sizes),
                 kernel_w=np.repeat(np.array(kw, dtype=np.int64), sizes))
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


@lru_cache(maxsize=16384)
def _storage_ratios(count_w: int, wd: float, wb: int, count_i: int, ad: float, ab: int, index_bits: int,
                    pointer_bits: int, w_cols: int, i_cols: int, skip_w: bool, skip_a: bool) -> tuple[float, float]:
    w_ratio = i_ratio = 1.0
    if skip_w and count_w:
        bits, _ = compressed_bits(count_w, wd, wb, index_bits, pointer_bits, w_cols)
        w_ratio = bits / (count_w * wb)
    if skip_a:
        bits, _ = compressed_bits(count_i, ad, ab, index_bits, pointer_bits, i_cols)
        i_ratio = bits / (count_i * ab)
    return w_ratio, i_ratio


@lru_cache(maxsize=16384)
def _weight_imbalance(filter_nnz: tuple[int, ...], lanes: int) -> float:
    return weight_imbalance(filter_nnz, lanes)


def _act_imbalance(length: np.ndarray, density: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """:func:`crosslayer.hw.sparsity.activation_imbalance` element-wise (all lengths and lanes positive)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = length * density
        std = np.sqrt(length * density * (1.0 - density))
        worst = np.minimum(length.astype(np.float64), mean + std * np.sqrt(2.0 * np.log(lanes)))
        return np.where((mean <= 0) | (density >= 1.0) | (lanes == 1), 1.0, worst / mean)


@dataclass(frozen=True, eq=False)
class Scored:
    """Scored options of a workload: per-level accesses and energies ``(5, K)`` in ``LEVELS`` order, cycles,
    and ``best[layer, dataflow]``, the option each (layer, dataflow) keeps."""

    workload: tuple[LayerShape, ...]
    dataflows: tuple[str, ...]
    plan: _Plan
    options: np.ndarray                 # (K,) the plan's option behind each scored row
    accesses: np.ndarray
    energy: np.ndarray
    total_energy: np.ndarray
    compute_cycles: np.ndarray
    cycles: np.ndarray
    glb_cycles: np.ndarray
    dram_cycles: np.ndarray             # per layer: all DRAM traffic at the DRAM bandwidth
    exposed_cycles: np.ndarray          # per layer: first tile's load + last output tile's write-back
    imbalance: np.ndarray
    best: np.ndarray                    # (L, D) row of the best option
    tilings: tuple[tuple[str, int, int, int], ...]
    weight_ratio: np.ndarray            # per layer
    input_ratio: np.ndarray
    frac: np.ndarray

    def table_column(self, row: int) -> tuple[OptionTable, int]:
        """The option table of scored row ``row`` and its column there."""
        k = int(self.options[row])
        seg = int(self.plan.seg_of[k])
        return self.plan.tables[seg], k - int(self.plan.starts[seg])


def score_workload(workload: Sequence[LayerShape], acc: Accelerator, dfs: tuple[str, ...], *,
                   objective: str = "energy", sparsity: SparsityConfig | None = None,
                   relative_power: Mapping[str, float] | None = None) -> Scored:
    """Score every option of every layer of ``workload`` under each of ``dfs`` (checked by the caller)."""
    sp = sparsity or _DEFAULT_SPARSITY
    rp = relative_power or {}
    n = len(workload)
    plan = _plan(workload, acc, dfs)
    wl_bits = np.empty(n)
    act_bits = np.empty(n)
    psum = np.empty(n)
    w_ratio = np.empty(n)
    i_ratio = np.empty(n)
    frac = np.empty(n)
    dram_words = np.empty(n)
    exposed = np.empty(n)
    e_mac = np.empty(n)
    macs = np.empty(n)
    wdens = np.empty(n)
    adens = np.empty(n)
    tilings = []
    requests = []
    for j, layer in enumerate(workload):
        pb = max(acc.psum_bits, layer.act_bits)
        wr, ir = _storage_ratios(layer.weight_count, layer.weight_density, layer.weight_bits, layer.input_count,
                                 layer.act_density, layer.act_bits, sp.index_bits, sp.pointer_bits,
                                 layer.out_channels, layer.in_channels * layer.batch, sp.skips_weights,
                                 sp.skips_activations)
        requests.append((layer, wr, ir, pb))
        wl_bits[j], act_bits[j], psum[j], w_ratio[j], i_ratio[j] = layer.weight_bits, layer.act_bits, pb, wr, ir
        frac[j] = skip_fraction(sp, layer.weight_density, layer.act_density) if layer.kind != "pool" else 1.0
        e_mac[j] = mac_energy(acc, layer.weight_bits, layer.act_bits, rp.get(layer.name, 1.0))
        macs[j] = layer.macs
        wdens[j], adens[j] = layer.weight_density, layer.act_density
    for j, (order, mt, pt, ct, wbits, ibits, obits, first, last) in enumerate(tilings_bits(requests, acc)):
        tilings.append((order, mt, pt, ct))
        exposed[j] = (first + last) / acc.word_bits / acc.dram_bandwidth
        dram_words[j] = (wbits + ibits + obits) / acc.word_bits

    lo = plan.layer_of
    mat = plan.matrix
    seg = plan.seg_of
    options = np.arange(seg.shape[0])
    nseg = len(plan.tables)
    if plan.is_rs.any():
        # RS options whose working set does not fit the RF at these bit widths are dropped before scoring
        rs_p, rs_q, kw = mat[9 + _COLUMNS.index("rs_p")], mat[9 + _COLUMNS.index("rs_q")], plan.kernel_w
        fits = (rs_p * rs_q * kw * wl_bits[lo] + rs_q * kw * act_bits[lo] + rs_p * psum[lo] <= acc.rf_bytes * 8)
        options = np.flatnonzero(~plan.is_rs | fits)
        lo, seg, mat = lo[options], seg[options], mat[:, options]
    c = mat[:9].reshape(3, 3, -1)
    col = {f: mat[9 + i] for i, f in enumerate(_COLUMNS)}
    ok = np.zeros(nseg, dtype=bool)
    ok[seg] = True
    if not ok.all():
        layer = workload[int(np.flatnonzero(~ok)[0]) // len(dfs)]
        raise MappingError(f"layer {layer.name!r} fits no RS mapping: one filter row of kernel_w = "
                           f"{layer.kernel_w} with its inputs and psum exceeds rf_bytes = {acc.rf_bytes}")
    starts = np.searchsorted(seg, np.arange(nseg))
    wb_o, ab_o, pb_o = wl_bits[lo], act_bits[lo], psum[lo]
    # energy per level (the per-option sums written out scalar by scalar in tests/hw/test_hw_costing.py)
    wb = acc.word_bits
    wst, ist, fr = w_ratio[lo], i_ratio[lo], frac[lo]       # stored fraction of weights / inputs
    dw = dram_words[lo]
    glb = dw + c[0, 0] * wb_o * wst / wb + c[0, 1] * ab_o * ist / wb + c[0, 2] * pb_o / wb
    noc = (c[1, 0] * wb_o * wst / wb + c[1, 1] * ab_o * ist / wb + c[1, 2] * pb_o / wb) * fr
    rf = (c[2, 0] * wb_o / wb + c[2, 1] * ab_o / wb + c[2, 2] * pb_o / wb) * fr
    mac = (macs * frac)[lo]
    en = acc.energy
    accesses = np.stack([dw, glb, noc, rf, mac])
    energy = accesses * np.array([[en.dram], [en.glb], [en.noc], [en.rf], [1.0]])
    energy[4] *= e_mac[lo]
    total = energy[0] + energy[1] + energy[2] + energy[3] + energy[4]
    if not np.isfinite(total).all():
        j = int(lo[np.flatnonzero(~np.isfinite(total))[0]])
        raise HardwareConfigError(f"layer {workload[j].name!r}: its energy on accelerator {acc.name!r} is not a "
                                  "finite number; the per-access energies or the layer size are too large")

    # latency: compute (scaled by skipped MACs and load imbalance) against the memory bounds
    stream, overhead = col["stream_cycles"], col["overhead_cycles"]
    imb = np.ones(total.shape[0])
    skipping = fr < 1.0
    if skipping.any():
        lanes, temporal, par = col["filter_lanes"], col["temporal_length"], np.maximum(col["parallel_pes"], 1)
        if sp.skips_weights:
            w_imb = _act_imbalance(temporal, wdens[lo], par)
            for j, layer in enumerate(workload):
                if layer.filter_nnz and frac[j] < 1.0:
                    sel = np.flatnonzero((lo == j) & (lanes > 0))
                    for v in np.unique(lanes[sel]).tolist():
                        w_imb[sel[lanes[sel] == v]] = _weight_imbalance(layer.filter_nnz, v)
            imb = imb * w_imb
        if sp.skips_activations:
            imb = imb * _act_imbalance(temporal, adens[lo], par)
        imb = np.where(skipping, imb, 1.0)
        scale = np.where(skipping, np.minimum(1.0, fr * imb), 1.0)
        compute = np.ceil(stream * scale - 1e-9).astype(np.int64) + overhead
    else:
        compute = stream + overhead
    # double buffering hides DRAM transfers behind compute except the first tile's load and the last output
    # tile's write-back: latency = exposed + max(compute, rest of the DRAM time, GLB time)
    glb_cycles = glb / acc.glb_bandwidth
    ex = exposed[lo]
    dram_rest = np.maximum(dw / acc.dram_bandwidth - ex, 0.0)
    cycles = np.ceil(ex + np.maximum(np.maximum(compute, dram_rest), glb_cycles) - 1e-9)

    # best option of each (layer, dataflow): least primary key, then least secondary, then first
    prim, sec = (total, cycles) if objective == "energy" else (cycles, total)
    is_min = prim == np.minimum.reduceat(prim, starts)[seg]
    sec_m = np.where(is_min, sec, np.inf)
    cand = is_min & (sec_m == np.minimum.reduceat(sec_m, starts)[seg])
    best = np.minimum.reduceat(np.where(cand, np.arange(prim.shape[0]), prim.shape[0]), starts)
    return Scored(workload=tuple(workload), dataflows=dfs, plan=plan, options=options, accesses=accesses,
                  energy=energy, total_energy=total, compute_cycles=compute, cycles=cycles, glb_cycles=glb_cycles,
                  dram_cycles=dram_words / acc.dram_bandwidth, exposed_cycles=exposed, imbalance=imb,
                  best=best.reshape(n, len(dfs)), tilings=tuple(tilings), weight_ratio=w_ratio,
                  input_ratio=i_ratio, frac=frac)

"""Energy and latency of every mapping option of every layer at once (NumPy over all options).

The options of a workload (per layer, per dataflow: one column each; RS has one per register-file
mapping) are laid side by side in one *plan*, which depends only on the layers' geometry and the array
and is cached. One call then scores them all: DRAM traffic from the least-traffic tiling of each layer
(:mod:`crosslayer.hw.tiling`), accesses per level from the option tables (:mod:`crosslayer.hw.dataflows`),
zero-skipping and load imbalance (:mod:`crosslayer.hw.sparsity`), energy per level and latency in cycles:
the first tile's load and the last output tile's write-back (which double buffering cannot hide) plus
max(compute, the rest of the DRAM time, the GLB time). Each (layer, dataflow) keeps its best option under the
objective (the other breaks ties; equal keys keep the first option).

What a call computes is kept small without changing a result. Options whose access counts are equal (many RS
mappings differ only in their timing) form one *class* in the plan, and energy is computed once per class.
The RF-fit test (it depends on the bit widths) runs over every option; the primary key over the options that
fit; the secondary key, the load imbalance and the latency only over the options that tie on the primary
key (with the energy objective, a handful per layer); the reported numbers only for the chosen option of each
(layer, dataflow). Every number is computed by the same expression in the same order as the scalar
definition in ``tests/hw/test_hw_costing.py``.
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
from crosslayer.hw.shapes import LayerShape, distinct_ceils
from crosslayer.hw.sparsity import SparsityConfig, stored_bits, weight_imbalance
from crosslayer.hw.tiling import CASE_ORDER, MAX_TILING_CANDIDATES, TilingArrays, search_tilings, shape_key
from crosslayer.hw.tiling_grid import ShapeKey

__all__ = ["LEVELS", "Scored", "clear_caches", "score_workload"]

LEVELS = ("dram", "glb", "noc", "rf", "mac")
_DEFAULT_SPARSITY = SparsityConfig()


@dataclass(frozen=True, eq=False)
class _Plan:
    """Every option of a workload under some dataflows, segment ``(layer, dataflow)`` after segment."""

    tables: tuple[OptionTable, ...]       # layer-major: tables[layer * D + d]
    starts: np.ndarray                    # (L * D + 1,) first option of each segment
    filled: np.ndarray                    # (L * D,) segments with at least one option
    layer_of: np.ndarray                  # (K,) layer index of each option
    seg_of: np.ndarray                    # (K,) segment of each option
    class_of: np.ndarray                  # (K,) class (equal counts within a segment) of each option
    class_counts: np.ndarray              # (3, 3, U) accesses per level and operand of each class
    class_layer: np.ndarray               # (U,)
    rs_pqk: np.ndarray                    # (K,) p * q * kernel_w of RS options (0 elsewhere): the RF-fit test
    rs_qk: np.ndarray                     # (K,) q * kernel_w
    rs_p: np.ndarray                      # (K,) p
    stream: np.ndarray                    # (K,) the option tables' columns, side by side
    overhead: np.ndarray
    lanes: np.ndarray
    parallel: np.ndarray                  # max(parallel PEs, 1)
    temporal: np.ndarray
    keys: tuple[ShapeKey, ...]            # tiling shape keys per layer
    oversized: str | None                 # the first layer whose tiling grid is too large (its message)
    weight_count: np.ndarray              # (L,) per-layer geometry
    input_count: np.ndarray
    macs: np.ndarray
    pool: np.ndarray                      # (L,) bool
    groups: np.ndarray


_PLANS: dict[tuple[object, ...], _Plan] = {}
_PLANS_MAX = 1024


def clear_caches() -> None:
    """Forget every cached plan, option table and tiling (benchmarks time the cold path with it)."""
    from crosslayer.hw import dataflows, shapes, tiling

    _PLANS.clear()
    shapes.distinct_ceils.cache_clear()
    dataflows.clear_caches()
    tiling.clear_caches()
    _weight_imbalance.cache_clear()


def _oversized(workload: Sequence[LayerShape]) -> str | None:
    for layer in workload:
        key = shape_key(layer)
        size = len(distinct_ceils(key[0])) * len(distinct_ceils(key[1])) * len(distinct_ceils(key[2]))
        if size > MAX_TILING_CANDIDATES:
            return (f"layer {layer.name!r} has {size} DRAM tiling candidates (tile sizes of {key[0]} filters x "
                    f"{key[2]} output rows x {key[1]} channels); at most {MAX_TILING_CANDIDATES} are searched: "
                    "split the batch or the layer")
    return None


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
    rs = np.repeat(np.array([t.dataflow == "RS" and workload[i // d].kind != "pool" for i, t in enumerate(tables)]),
                   sizes)
    kw = np.repeat(np.array([workload[i // d].kernel_w for i in range(len(tables))], dtype=np.int64), sizes)

    def column(f: str) -> np.ndarray:
        parts = [np.asarray(getattr(t, f)) if getattr(t, f).size else np.zeros(t.size, np.int64) for t in tables]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    # classes: equal counts within a segment (RS mappings that differ only in timing)
    n_cls = np.array([t.n_classes for t in tables], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_cls)[:-1]])
    reps = []
    for t in tables:
        rep = np.zeros(t.n_classes, dtype=np.int64)
        rep[t.classes] = np.arange(t.size)
        reps.append(t.counts.reshape(9, -1)[:, rep])
    class_of = np.concatenate([t.classes + o for t, o in zip(tables, offsets.tolist(), strict=True)])
    class_counts = np.concatenate(reps, axis=1).reshape(3, 3, -1)
    p, q = column("rs_p") * rs, column("rs_q") * rs
    plan = _Plan(tables=tables, starts=np.concatenate([[0], np.cumsum(sizes)]), filled=sizes > 0,
                 layer_of=seg_of // d, seg_of=seg_of,
                 class_of=class_of, class_counts=class_counts,
                 class_layer=np.repeat(np.arange(len(tables)) // d, n_cls), rs_pqk=p * q * kw, rs_qk=q * kw, rs_p=p,
                 stream=column("stream_cycles"), overhead=column("overhead_cycles"), lanes=column("filter_lanes"),
                 parallel=np.maximum(column("parallel_pes"), 1), temporal=column("temporal_length"),
                 keys=tuple(shape_key(layer) for layer in workload), oversized=_oversized(workload),
                 weight_count=np.array([s.weight_count for s in workload], dtype=np.int64),
                 input_count=np.array([s.input_count for s in workload], dtype=np.int64),
                 macs=np.array([s.macs for s in workload], dtype=np.int64),
                 pool=np.array([s.kind == "pool" for s in workload], dtype=bool),
                 groups=np.array([s.groups for s in workload], dtype=np.int64))
    for a in plan.__dict__.values():
        if isinstance(a, np.ndarray):
            a.setflags(write=False)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


@lru_cache(maxsize=16384)
def _weight_imbalance(filter_nnz: tuple[int, ...], lanes: int) -> float:
    return weight_imbalance(filter_nnz, lanes)


def _act_imbalance(length: np.ndarray, density: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """:func:`crosslayer.hw.sparsity.activation_imbalance` element-wise (all lengths and lanes positive)."""
    mean = length * density
    std = np.sqrt(length * density * (1.0 - density))
    worst = np.minimum(length.astype(np.float64), mean + std * np.sqrt(2.0 * np.log(lanes)))
    empty = mean <= 0
    return np.where(empty | (density >= 1.0) | (lanes == 1), 1.0, worst / np.where(empty, 1.0, mean))


@dataclass(frozen=True, eq=False)
class _Layers:
    """Per-layer numbers of one call (arrays of length L)."""

    wl_bits: np.ndarray
    act_bits: np.ndarray
    psum: np.ndarray
    w_ratio: np.ndarray
    i_ratio: np.ndarray
    frac: np.ndarray
    wdens: np.ndarray
    adens: np.ndarray
    dram_words: np.ndarray
    exposed: np.ndarray
    filter_nnz: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, eq=False)
class Scored:
    """The chosen option of each (layer, dataflow) of a workload: per-level accesses and energies ``(5, R)`` in
    ``LEVELS`` order, cycles, ..., one column per chosen option, and ``best[layer, dataflow]``, its column."""

    workload: tuple[LayerShape, ...]
    dataflows: tuple[str, ...]
    plan: _Plan
    options: np.ndarray                 # (R,) the plan's option behind each row
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
    tiling: TilingArrays
    weight_ratio: np.ndarray            # per layer
    input_ratio: np.ndarray
    frac: np.ndarray

    def table_column(self, row: int) -> tuple[OptionTable, int]:
        """The option table of row ``row`` and its column there."""
        k = int(self.options[row])
        seg = int(self.plan.seg_of[k])
        return self.plan.tables[seg], k - int(self.plan.starts[seg])

    def tiling_of(self, j: int) -> tuple[str, int, int, int]:
        """``(order, m_tile, p_tile, c_tile)`` of layer ``j``'s DRAM tiling."""
        t = self.tiling
        return CASE_ORDER[int(t.case[j])], int(t.m_tile[j]), int(t.p_tile[j]), int(t.c_tile[j])


def _layers(workload: Sequence[LayerShape], plan: _Plan, acc: Accelerator, sp: SparsityConfig) -> tuple[
        _Layers, TilingArrays]:
    wl = np.array([s.weight_bits for s in workload], dtype=np.float64)
    ab = np.array([s.act_bits for s in workload], dtype=np.float64)
    wd = np.array([s.weight_density for s in workload], dtype=np.float64)
    ad = np.array([s.act_density for s in workload], dtype=np.float64)
    psum = np.maximum(ab, float(acc.psum_bits))
    n = len(workload)
    ones = np.ones(n)
    w_ratio, i_ratio = ones, ones
    if sp.skips_weights:
        w_ratio = np.array([stored_bits(c, s.weight_density, s.weight_bits, sp.index_bits, sp.pointer_bits,
                                        s.out_channels) / (c * s.weight_bits) if c else 1.0
                            for s, c in zip(workload, plan.weight_count.tolist(), strict=True)])
    if sp.skips_activations:
        i_ratio = np.array([stored_bits(c, s.act_density, s.act_bits, sp.index_bits, sp.pointer_bits,
                                        s.in_channels * s.batch) / (c * s.act_bits)
                            for s, c in zip(workload, plan.input_count.tolist(), strict=True)])
    frac = ones
    if sp.skips_weights or sp.skips_activations:
        frac = (wd if sp.skips_weights else ones) * (ad if sp.skips_activations else ones)
        frac = np.where(plan.pool, 1.0, frac)
    tiling = search_tilings(plan.keys, plan.groups, wl * w_ratio, ab * i_ratio, ab, psum, acc.glb_bytes * 8,
                            [s.name for s in workload], acc.glb_bytes)
    dram_words = (tiling.weight_bits + tiling.input_bits + tiling.output_bits) / acc.word_bits
    exposed = (tiling.first_bits + tiling.last_bits) / acc.word_bits / acc.dram_bandwidth
    nnz = tuple(s.filter_nnz for s in workload)
    return _Layers(wl_bits=wl, act_bits=ab, psum=psum, w_ratio=w_ratio, i_ratio=i_ratio, frac=frac, wdens=wd,
                   adens=ad, dram_words=dram_words, exposed=exposed, filter_nnz=nnz), tiling


def _class_accesses(plan: _Plan, ly: _Layers, macs_frac: np.ndarray, acc: Accelerator) -> tuple[np.ndarray, ...]:
    """Accesses per level (``LEVELS`` order: DRAM, GLB, NoC, RF, MAC) of every class, each a 1-D array (the
    per-option sums written out scalar by scalar in tests/hw/test_hw_costing.py)."""
    lo = plan.class_layer
    c = plan.class_counts
    wb = acc.word_bits
    wb_o, ab_o, pb_o = ly.wl_bits[lo], ly.act_bits[lo], ly.psum[lo]
    wst, ist, fr = ly.w_ratio[lo], ly.i_ratio[lo], ly.frac[lo]       # stored fraction of weights / inputs
    dw = ly.dram_words[lo]
    glb = dw + c[0, 0] * wb_o * wst / wb + c[0, 1] * ab_o * ist / wb + c[0, 2] * pb_o / wb
    noc = (c[1, 0] * wb_o * wst / wb + c[1, 1] * ab_o * ist / wb + c[1, 2] * pb_o / wb) * fr
    rf = (c[2, 0] * wb_o / wb + c[2, 1] * ab_o / wb + c[2, 2] * pb_o / wb) * fr
    return dw, glb, noc, rf, macs_frac[lo]


def _class_total(rows: tuple[np.ndarray, ...], e_mac: np.ndarray, acc: Accelerator) -> np.ndarray:
    """Total energy of classes from their :func:`_class_accesses` (``e_mac``: their layers' MAC energy)."""
    en = acc.energy
    dw, glb, noc, rf, mac = rows
    return dw * en.dram + glb * en.glb + noc * en.noc + rf * en.rf + mac * e_mac


def _class_energy(rows: tuple[np.ndarray, ...], e_mac: np.ndarray, acc: Accelerator,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Accesses and energy per level ``(5, n)`` of classes from their :func:`_class_accesses`."""
    en = acc.energy
    accesses = np.stack(rows)
    energy = accesses * np.array([[en.dram], [en.glb], [en.noc], [en.rf], [1.0]])
    energy[4] *= e_mac
    return accesses, energy


def _timing(plan: _Plan, ly: _Layers, sp: SparsityConfig, glb: np.ndarray, idx: np.ndarray, acc: Accelerator,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compute cycles, cycles, GLB cycles and load imbalance of the options ``idx`` (``glb``: their GLB
    accesses): compute scaled by skipped MACs and load imbalance, against the memory bounds."""
    lo = plan.layer_of[idx]
    fr = ly.frac[lo]
    stream, overhead = plan.stream[idx], plan.overhead[idx]
    imb = np.ones(idx.shape[0])
    skipping = fr < 1.0
    if skipping.any():
        lanes, temporal, par = plan.lanes[idx], plan.temporal[idx], plan.parallel[idx]
        if sp.skips_weights:
            w_imb = _act_imbalance(temporal, ly.wdens[lo], par)
            for j, nnz in enumerate(ly.filter_nnz):
                if nnz and ly.frac[j] < 1.0:
                    sel = np.flatnonzero((lo == j) & (lanes > 0))
                    for v in np.unique(lanes[sel]).tolist():
                        w_imb[sel[lanes[sel] == v]] = _weight_imbalance(nnz, v)
            imb = imb * w_imb
        if sp.skips_activations:
            imb = imb * _act_imbalance(temporal, ly.adens[lo], par)
        imb = np.where(skipping, imb, 1.0)
        scale = np.where(skipping, np.minimum(1.0, fr * imb), 1.0)
        compute = np.ceil(stream * scale - 1e-9).astype(np.int64) + overhead
    else:
        compute = stream + overhead
    # double buffering hides DRAM transfers behind compute except the first tile's load and the last output
    # tile's write-back: latency = exposed + max(compute, rest of the DRAM time, GLB time)
    glb_cycles = glb / acc.glb_bandwidth
    ex = ly.exposed[lo]
    dram_rest = np.maximum(ly.dram_words[lo] / acc.dram_bandwidth - ex, 0.0)
    cycles = np.ceil(ex + np.maximum(np.maximum(compute, dram_rest), glb_cycles) - 1e-9)
    return compute, cycles, glb_cycles, imb


def _first_least(values: np.ndarray, seg: np.ndarray, nseg: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` grouped by ``seg`` (sorted, every segment present): whether each is its segment's least, and
    the position of the first least of each segment."""
    starts = np.searchsorted(seg, np.arange(nseg))
    least = np.minimum.reduceat(values, starts)
    is_min = values == least[seg]
    first = np.minimum.reduceat(np.where(is_min, np.arange(values.shape[0]), values.shape[0]), starts)
    return is_min, first


def score_workload(workload: Sequence[LayerShape], acc: Accelerator, dfs: tuple[str, ...], *,
                   objective: str = "energy", sparsity: SparsityConfig | None = None,
                   relative_power: Mapping[str, float] | None = None) -> Scored:
    """Score every option of every layer of ``workload`` under each of ``dfs`` (checked by the caller)."""
    sp = sparsity or _DEFAULT_SPARSITY
    rp = relative_power or {}
    plan = _plan(workload, acc, dfs)
    power = np.ones(len(workload))
    for j, s in enumerate(workload):
        if s.name in rp:
            mac_energy(acc, s.weight_bits, s.act_bits, rp[s.name])       # validates the relative power
            power[j] = rp[s.name]
    if plan.oversized:
        raise MappingError(plan.oversized)
    ly, tiling = _layers(workload, plan, acc, sp)
    e_mac = acc.energy.mac * (ly.wl_bits * ly.act_bits) / acc.reference_bits ** 2 * power
    macs_frac = plan.macs * ly.frac

    # RS options whose working set does not fit the RF at these bit widths are dropped before scoring
    lo = plan.layer_of
    fits = plan.rs_pqk * ly.wl_bits[lo] + plan.rs_qk * ly.act_bits[lo] + plan.rs_p * ly.psum[lo] <= acc.rf_bytes * 8
    nseg = len(plan.tables)
    ok = plan.filled.copy()
    if fits.size:
        ok[ok] = np.logical_or.reduceat(fits, plan.starts[:-1][ok])
    if not ok.all():
        layer = workload[int(np.flatnonzero(~ok)[0]) // len(dfs)]
        raise MappingError(f"layer {layer.name!r} fits no RS mapping: one filter row of kernel_w = "
                           f"{layer.kernel_w} with its inputs and psum exceeds rf_bytes = {acc.rf_bytes}")
    rows = _class_accesses(plan, ly, macs_frac, acc)
    total = _class_total(rows, e_mac[plan.class_layer], acc)
    fit_idx = np.flatnonzero(fits)
    opt_total = total[plan.class_of[fit_idx]]
    if not np.isfinite(opt_total).all():
        j = int(lo[fit_idx[np.flatnonzero(~np.isfinite(opt_total))[0]]])
        raise HardwareConfigError(f"layer {workload[j].name!r}: its energy on accelerator {acc.name!r} is not a "
                                  "finite number; the per-access energies or the layer size are too large")

    # best option of each (layer, dataflow): least primary key, then least secondary, then first
    seg = plan.seg_of[fit_idx]
    if objective == "energy":
        is_min, _ = _first_least(opt_total, seg, nseg)
        tied = fit_idx[is_min]
        timing = _timing(plan, ly, sp, rows[1][plan.class_of[tied]], tied, acc)
        _, first = _first_least(timing[1], plan.seg_of[tied], nseg)
        compute, cycles, glb_cycles, imb = (a[first] for a in timing)
    else:
        timing = _timing(plan, ly, sp, rows[1][plan.class_of[fit_idx]], fit_idx, acc)
        is_min, _ = _first_least(timing[1], seg, nseg)
        tied = fit_idx[is_min]
        _, first = _first_least(opt_total[is_min], plan.seg_of[tied], nseg)
        compute, cycles, glb_cycles, imb = (a[is_min][first] for a in timing)
    best = tied[first]
    cls = plan.class_of[best]
    accesses, energy = _class_energy(tuple(r[cls] for r in rows), e_mac[plan.class_layer[cls]], acc)
    n = len(workload)
    return Scored(workload=tuple(workload), dataflows=dfs, plan=plan, options=best, accesses=accesses,
                  energy=energy, total_energy=total[cls], compute_cycles=compute, cycles=cycles,
                  glb_cycles=glb_cycles, dram_cycles=ly.dram_words / acc.dram_bandwidth, exposed_cycles=ly.exposed,
                  imbalance=imb, best=np.arange(nseg).reshape(n, len(dfs)), tiling=tiling, weight_ratio=ly.w_ratio,
                  input_ratio=ly.i_ratio, frac=ly.frac)

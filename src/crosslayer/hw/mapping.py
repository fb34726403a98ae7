"""Per-layer mapping search and cost: DRAM tiling that fits the global buffer, energy and latency.

The layer's loops over output channels (m), output rows (p, batch stacked) and input channels (c) are
tiled so that one weight, input and output tile fit the global buffer together; the three tile loops
run in one of six orders. Reuse analysis (the loop-nest rule of Timeloop, Parashar et al., ISPASS 2019,
and of Eyeriss's own analysis): an operand is re-fetched from DRAM once per iteration of every loop it
does not depend on that sits outside its innermost dependent loop; outputs whose reduction loop (c) is
outside spill partial sums (write + read back). The search is vectorised over every tile-size candidate
``ceil(D / k)`` and order with NumPy, and for RS also over the RF mapping ``(p, q)``; it minimises energy
or latency (the other breaks ties).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from crosslayer.hw.accelerator import Accelerator, check_dataflow, mac_energy
from crosslayer.hw.dataflows import ArrayCounts, array_counts, rs_candidates
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerShape
from crosslayer.hw.sparsity import (
    SparsityConfig,
    activation_imbalance,
    compressed_bits,
    skip_fraction,
    weight_imbalance,
)

__all__ = ["LEVELS", "LayerCost", "Objective", "dram_tiling", "evaluate_layer"]

LEVELS = ("dram", "glb", "noc", "rf", "mac")
Objective = Literal["energy", "latency"]
_ORDERS = tuple(itertools.permutations("mpc"))
_DEPENDS = {"weight": set("mc"), "input": set("pc"), "output": set("mp")}


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs under one dataflow with its best mapping."""

    layer: str
    dataflow: str
    macs: int
    effective_macs: float
    compute_cycles: int
    cycles: int                      # latency in cycles: max(compute, DRAM-bound, GLB-bound)
    latency_s: float
    utilization: float               # effective MACs per PE-cycle of the latency
    accesses: dict[str, float]       # level -> values accessed (MAC count for "mac")
    energy: dict[str, float]         # level -> normalised energy
    tiling: dict[str, Any] = field(default_factory=dict)

    @property
    def total_energy(self) -> float:
        return float(sum(self.energy.values()))

    @property
    def bound(self) -> str:
        return str(self.tiling.get("bound", "compute"))


def _candidates(d: int) -> np.ndarray:
    return np.array(sorted({-(-d // k) for k in range(1, d + 1)}), dtype=np.int64)


def dram_tiling(layer: LayerShape, acc: Accelerator, *, weight_ratio: float = 1.0, input_ratio: float = 1.0,
                psum_bits: int = 16) -> dict[str, Any]:
    """The DRAM traffic (in bits, per operand) of the tiling and loop order with the least DRAM energy.

    ``*_ratio`` scale stored sizes for compressed operands. Raises :class:`MappingError` if even the
    smallest tile does not fit ``acc.glb_bytes``.
    """
    g = layer.groups
    m, c = layer.filters_per_group, layer.channels_per_group
    pp, qq = layer.batch * layer.out_h, layer.out_w
    r, s, st = layer.kernel_h, layer.kernel_w, layer.stride
    w_in = layer.in_w + 2 * layer.padding
    wb, ab = layer.weight_bits * weight_ratio, layer.act_bits * input_ratio
    mt, pt, ct = np.meshgrid(_candidates(m), _candidates(pp), _candidates(c), indexing="ij")
    mt, pt, ct = mt.ravel(), pt.ravel(), ct.ravel()
    wt_bits = np.zeros_like(mt, dtype=np.float64) if layer.kind == "pool" else mt * ct * r * s * wb
    in_rows = (pt - 1) * st + r
    foot = wt_bits + ct * in_rows * w_in * ab + mt * pt * qq * psum_bits
    fits = foot <= acc.glb_bytes * 8
    if not fits.any():
        need = int(np.ceil(foot.min() / 8))
        raise MappingError(f"layer {layer.name!r} fits no tiling: its smallest tile needs {need} bytes of global "
                           f"buffer but glb_bytes = {acc.glb_bytes}")
    mt, pt, ct = mt[fits], pt[fits], ct[fits]
    n = {"m": -(-m // mt), "p": -(-pp // pt), "c": -(-c // ct)}
    base_w = 0.0 if layer.kind == "pool" else m * c * r * s * wb
    base_i = c * w_in * (st * (pp - n["p"]) + n["p"] * r) * ab   # input rows of all p tiles, halos included
    out_vals = m * pp * qq
    best: dict[str, Any] | None = None
    e_dram, e_glb = acc.energy.dram, acc.energy.glb
    for order in _ORDERS:
        fac = {}
        for op, dep in _DEPENDS.items():
            inner = max(i for i, loop in enumerate(order) if loop in dep)
            f = np.ones_like(mt)
            for i in range(inner):
                if order[i] not in dep:
                    f = f * n[order[i]]
            fac[op] = f
        w_bits = base_w * fac["weight"]
        i_bits = base_i * fac["input"]
        fo = fac["output"]  # > 1 when the reduction loop c sits outside: partial sums spill to DRAM
        o_bits = np.where(fo > 1, out_vals * psum_bits * (2.0 * fo - 1.0), float(out_vals * layer.act_bits))
        total = (w_bits + i_bits + o_bits) * g
        energy = total / acc.word_bits * (e_dram + e_glb)
        k = int(np.argmin(energy))
        if best is None or energy[k] < best["energy"]:
            best = {"energy": float(energy[k]), "m_tile": int(mt[k]), "p_tile": int(pt[k]), "c_tile": int(ct[k]),
                    "order": "".join(order), "weight_bits": float(np.asarray(w_bits)[k] * g),
                    "input_bits": float(np.asarray(i_bits)[k] * g), "output_bits": float(np.asarray(o_bits)[k] * g)}
    assert best is not None
    return best


def _energy(layer: LayerShape, acc: Accelerator, arr: ArrayCounts, dram: Mapping[str, Any], *,
            weight_ratio: float, input_ratio: float, frac: float, relative_power: float,
            psum_bits: int) -> tuple[dict[str, float], dict[str, float]]:
    bits = {"weight": layer.weight_bits, "input": layer.act_bits, "output": psum_bits}
    store = {"weight": weight_ratio, "input": input_ratio, "output": 1.0}
    acc_v: dict[str, float] = {}
    en: dict[str, float] = {}
    dram_bits = dram["weight_bits"] + dram["input_bits"] + dram["output_bits"]
    acc_v["dram"] = dram_bits / acc.word_bits
    en["dram"] = acc_v["dram"] * acc.energy.dram
    glb_words = dram_bits / acc.word_bits          # every DRAM transfer also reads or writes the GLB
    noc_words = rf_words = 0.0
    for op in ("weight", "input", "output"):
        glb_words += arr.counts["glb"][op] * bits[op] * store[op] / acc.word_bits
        noc_words += arr.counts["noc"][op] * bits[op] * store[op] / acc.word_bits
        rf_words += arr.counts["rf"][op] * bits[op] / acc.word_bits
    # zero-skipping removes the RF and NoC traffic of skipped MACs (operands read per MAC)
    acc_v["glb"] = glb_words
    acc_v["noc"] = noc_words * frac
    acc_v["rf"] = rf_words * frac
    acc_v["mac"] = layer.macs * frac
    for lvl in ("glb", "noc", "rf"):
        en[lvl] = acc_v[lvl] * acc.energy.of(lvl)
    en["mac"] = acc_v["mac"] * mac_energy(acc, layer.weight_bits, layer.act_bits, relative_power)
    return acc_v, en


def evaluate_layer(layer: LayerShape, acc: Accelerator, dataflow: str, *, objective: Objective = "energy",
                   sparsity: SparsityConfig | None = None, relative_power: float = 1.0) -> LayerCost:
    """Best mapping of ``layer`` on ``acc`` under ``dataflow``; its energy per level and its latency."""
    check_dataflow(dataflow)
    if objective not in ("energy", "latency"):
        raise MappingError(f"objective = {objective!r} is unknown; allowed: 'energy', 'latency'")
    if dataflow not in acc.dataflows:
        raise MappingError(f"dataflow {dataflow!r} is not supported by accelerator {acc.name!r}; "
                           f"allowed: {', '.join(acc.dataflows)}")
    sp = sparsity or SparsityConfig()
    psum_bits = max(acc.psum_bits, layer.act_bits)
    w_ratio = i_ratio = 1.0
    if sp.skips_weights and layer.weight_count:
        bits, _ = compressed_bits(layer.weight_count, layer.weight_density, layer.weight_bits, sp.index_bits,
                                  sp.pointer_bits, layer.out_channels)
        w_ratio = bits / (layer.weight_count * layer.weight_bits)
    if sp.skips_activations:
        bits, _ = compressed_bits(layer.input_count, layer.act_density, layer.act_bits, sp.index_bits,
                                  sp.pointer_bits, layer.in_channels * layer.batch)
        i_ratio = bits / (layer.input_count * layer.act_bits)
    frac = skip_fraction(sp, layer.weight_density, layer.act_density) if layer.kind != "pool" else 1.0
    dram = dram_tiling(layer, acc, weight_ratio=w_ratio, input_ratio=i_ratio, psum_bits=psum_bits)
    if dataflow == "RS" and layer.kind != "pool":
        options = list(rs_candidates(layer, acc, psum_bits))
        if not options:
            raise MappingError(f"layer {layer.name!r} fits no RS mapping: one filter row of kernel_w = "
                               f"{layer.kernel_w} with its inputs and psum exceeds rf_bytes = {acc.rf_bytes}")
    else:
        options = [None]  # type: ignore[list-item]
    best: LayerCost | None = None
    for opt in options:
        arr = array_counts(layer, dataflow, acc, rs=opt, psum_bits=psum_bits)
        cost = _assemble(layer, acc, dataflow, arr, dram, sp, frac, w_ratio, i_ratio, relative_power, psum_bits)
        if best is None or _key(cost, objective) < _key(best, objective):
            best = cost
    assert best is not None
    return best


def _key(c: LayerCost, objective: Objective) -> tuple[float, float]:
    return (c.total_energy, c.cycles) if objective == "energy" else (c.cycles, c.total_energy)


def _assemble(layer: LayerShape, acc: Accelerator, dataflow: str, arr: ArrayCounts, dram: Mapping[str, Any],
              sp: SparsityConfig, frac: float, w_ratio: float, i_ratio: float, relative_power: float,
              psum_bits: int) -> LayerCost:
    imbalance = 1.0
    if frac < 1.0:
        if sp.skips_weights and arr.filter_lanes > 0 and layer.filter_nnz:
            imbalance *= weight_imbalance(layer.filter_nnz, arr.filter_lanes)
        elif sp.skips_weights:
            imbalance *= activation_imbalance(arr.temporal_length, layer.weight_density, max(arr.parallel_pes, 1))
        if sp.skips_activations:
            imbalance *= activation_imbalance(arr.temporal_length, layer.act_density, max(arr.parallel_pes, 1))
    scale = min(1.0, frac * imbalance) if frac < 1.0 else 1.0
    compute = int(np.ceil(arr.stream_cycles * scale - 1e-9)) + arr.overhead_cycles
    accesses, energy = _energy(layer, acc, arr, dram, weight_ratio=w_ratio, input_ratio=i_ratio, frac=frac,
                               relative_power=relative_power, psum_bits=psum_bits)
    dram_cycles = accesses["dram"] / acc.dram_bandwidth
    glb_cycles = accesses["glb"] / acc.glb_bandwidth
    cycles = int(np.ceil(max(compute, dram_cycles, glb_cycles)))
    bound = "compute" if cycles == compute else ("dram" if dram_cycles >= glb_cycles else "glb")
    eff = layer.macs * frac
    util = eff / (cycles * acc.pes) if cycles else 0.0
    tiling = {k: dram[k] for k in ("m_tile", "p_tile", "c_tile", "order")}
    tiling.update(arr.mapping)
    tiling.update({"bound": bound, "imbalance": round(imbalance, 4), "weight_storage_ratio": round(w_ratio, 4),
                   "input_storage_ratio": round(i_ratio, 4)})
    return LayerCost(layer=layer.name, dataflow=dataflow, macs=layer.macs, effective_macs=eff,
                     compute_cycles=compute, cycles=cycles, latency_s=cycles / (acc.clock_mhz * 1e6),
                     utilization=util, accesses=accesses, energy=energy, tiling=tiling)

"""The cost of one mapping option written out scalar by scalar (the definition in docs/hw.md): the reference
both cost-model exactness tests compare the vectorised model against."""

from __future__ import annotations

import math
from dataclasses import dataclass

from crosslayer.hw.accelerator import Accelerator, mac_energy
from crosslayer.hw.dataflows import ArrayCounts
from crosslayer.hw.shapes import LayerShape
from crosslayer.hw.sparsity import (
    SparsityConfig,
    activation_imbalance,
    compressed_bits,
    skip_fraction,
    weight_imbalance,
)


@dataclass(frozen=True)
class Storage:
    """How a layer's operands are stored: compressed / dense bit ratios of weights and inputs, the fraction of
    MACs (and array traffic) left after zero-skipping, and the partial-sum width."""

    weight_ratio: float
    input_ratio: float
    mac_fraction: float
    psum_bits: int


def storage(layer: LayerShape, acc: Accelerator, sp: SparsityConfig) -> Storage:
    psum = max(acc.psum_bits, layer.act_bits)
    wr = ir = 1.0
    if sp.skips_weights and layer.weight_count:
        wr = compressed_bits(layer.weight_count, layer.weight_density, layer.weight_bits, sp.index_bits,
                             sp.pointer_bits, layer.out_channels)[0] / (layer.weight_count * layer.weight_bits)
    if sp.skips_activations:
        ir = compressed_bits(layer.input_count, layer.act_density, layer.act_bits, sp.index_bits, sp.pointer_bits,
                             layer.in_channels * layer.batch)[0] / (layer.input_count * layer.act_bits)
    frac = skip_fraction(sp, layer.weight_density, layer.act_density) if layer.kind != "pool" else 1.0
    return Storage(wr, ir, frac, psum)


def option_cost(layer: LayerShape, acc: Accelerator, arr: ArrayCounts, sp: SparsityConfig, st: Storage,
                dram_words: float, exposed_cycles: float, relative_power: float = 1.0) -> tuple[float, int]:
    """Total energy and cycles of one option, given the DRAM words of its tiling and the cycles of the first
    and last tiles' transfers that no compute hides."""
    bits = {"weight": layer.weight_bits, "input": layer.act_bits, "output": st.psum_bits}
    store = {"weight": st.weight_ratio, "input": st.input_ratio, "output": 1.0}
    frac = st.mac_fraction
    glb = dram_words + sum(arr.counts["glb"][o] * bits[o] * store[o] / acc.word_bits for o in bits)
    noc = sum(arr.counts["noc"][o] * bits[o] * store[o] / acc.word_bits for o in bits) * frac
    rf = sum(arr.counts["rf"][o] * bits[o] / acc.word_bits for o in bits) * frac
    e = acc.energy
    energy = (dram_words * e.dram + glb * e.glb + noc * e.noc + rf * e.rf
              + layer.macs * frac * mac_energy(acc, layer.weight_bits, layer.act_bits, relative_power))
    imb = 1.0
    if frac < 1.0:
        if sp.skips_weights and arr.filter_lanes > 0 and layer.filter_nnz:
            imb *= weight_imbalance(layer.filter_nnz, arr.filter_lanes)
        elif sp.skips_weights:
            imb *= activation_imbalance(arr.temporal_length, layer.weight_density, max(arr.parallel_pes, 1))
        if sp.skips_activations:
            imb *= activation_imbalance(arr.temporal_length, layer.act_density, max(arr.parallel_pes, 1))
    scale = min(1.0, frac * imb) if frac < 1.0 else 1.0
    compute = math.ceil(arr.stream_cycles * scale - 1e-9) + arr.overhead_cycles
    rest = max(dram_words / acc.dram_bandwidth - exposed_cycles, 0.0)
    cycles = math.ceil(exposed_cycles + max(compute, rest, glb / acc.glb_bandwidth) - 1e-9)
    return energy, cycles

"""The vectorised cost model against a per-option scalar reference, the fast workload path, the caches,
and the TPU preset's 8-bit words."""

from __future__ import annotations

import dataclasses

import pytest
from hw_reference import option_cost, storage

from crosslayer.hw import cost_workload, evaluate_network, load_accelerator
from crosslayer.hw.accelerator import Accelerator, EnergyTable
from crosslayer.hw.costing import clear_caches
from crosslayer.hw.dataflows import ArrayCounts, array_counts, rs_candidates
from crosslayer.hw.mapping import dram_tiling, evaluate_layer
from crosslayer.hw.shapes import LayerShape, conv, distinct_ceils, linear
from crosslayer.hw.sparsity import SparsityConfig

USER_STYLE = (
    conv("stem", 3, 16, 32, 3, padding=1),
    conv("res.conv1", 16, 16, 32, 3, padding=1, weight_density=0.4, act_density=0.6,
         filter_nnz=tuple(10 + 8 * i for i in range(16))),
    conv("dw", 32, 32, 16, 3, padding=1, groups=32, act_density=0.5),          # depthwise (MobileNet)
    conv("pw", 32, 64, 16, 1, weight_bits=8, act_bits=8),                      # pointwise
    conv("se.fc1", 64, 4, 1, 1), conv("se.fc2", 4, 64, 1, 1),                  # squeeze-and-excitation
    linear("attn.qkv", 64, 192, weight_bits=8, act_bits=8, weight_density=0.3),
    LayerShape(name="pool", kind="pool", in_channels=64, out_channels=64, in_h=16, in_w=16, kernel_h=2,
               kernel_w=2, stride=2, groups=64),
    linear("head", 64 * 8 * 8, 10, act_density=0.45),
)


def _reference(layer: LayerShape, acc: Accelerator, arr: ArrayCounts, sp: SparsityConfig,
               relative_power: float = 1.0) -> tuple[float, int]:
    """Total energy and cycles of one option, written out scalar by scalar (the definition in docs/hw.md)."""
    st = storage(layer, acc, sp)
    t = dram_tiling(layer, acc, weight_ratio=st.weight_ratio, input_ratio=st.input_ratio, psum_bits=st.psum_bits)
    dram = (t["weight_bits"] + t["input_bits"] + t["output_bits"]) / acc.word_bits
    exposed = (t["first_tile_bits"] + t["last_tile_bits"]) / acc.word_bits / acc.dram_bandwidth
    return option_cost(layer, acc, arr, sp, st, dram, exposed, relative_power)


@pytest.mark.parametrize("skip", ["none", "both", "weights"])
@pytest.mark.parametrize("preset", ["eyeriss", "tpu"])
def test_vectorised_cost_equals_the_scalar_definition_on_user_style_layers(preset: str, skip: str) -> None:
    acc = load_accelerator(preset)
    sp = SparsityConfig(skip=skip)  # type: ignore[arg-type]
    for layer in USER_STYLE:
        for df in acc.dataflows:
            got = evaluate_layer(layer, acc, df, sparsity=sp, relative_power=0.8)
            if df == "RS" and layer.kind != "pool":
                psum = max(acc.psum_bits, layer.act_bits)
                refs = [_reference(layer, acc, array_counts(layer, df, acc, rs=pq, psum_bits=psum), sp, 0.8)
                        for pq in rs_candidates(layer, acc, psum)]
                assert refs
                best = min(refs)                       # energy first, then cycles
            else:
                best = _reference(layer, acc, array_counts(layer, df, acc), sp, 0.8)
            assert got.total_energy == pytest.approx(best[0], rel=1e-12), (layer.name, df)
            assert got.cycles == best[1], (layer.name, df)


def test_rs_mappings_on_and_off_the_candidate_grid_are_costed() -> None:
    acc = load_accelerator("eyeriss")
    layer = conv("c", 20, 50, 12, 5)
    grid = set(rs_candidates(layer, acc, 16))
    assert (1, 1) in grid and len(grid) > 10
    for p, q in [(7, 3), (9, 2)]:                      # off the grid of distinct pass counts
        off = array_counts(layer, "RS", acc, rs=(p, q))
        assert off.mapping["p"] == p and off.stream_cycles > 0


def test_distinct_ceils_matches_brute_force() -> None:
    for d in (1, 2, 3, 10, 97, 500, 800, 4097):
        assert distinct_ceils(d) == tuple(sorted({-(-d // k) for k in range(1, d + 1)}))


@pytest.mark.parametrize("objective", ["energy", "latency"])
def test_cost_workload_equals_evaluate_network_best(objective: str) -> None:
    for preset in ("eyeriss", "tpu"):
        acc = load_accelerator(preset)
        sp = SparsityConfig(skip="both")
        nc = evaluate_network(USER_STYLE, acc, objective=objective, sparsity=sp)  # type: ignore[arg-type]
        fast = cost_workload(USER_STYLE, acc, objective=objective, sparsity=sp)  # type: ignore[arg-type]
        best = nc.best_per_layer()
        assert fast.best_dataflow == tuple(c.dataflow for c in best)
        assert fast.energy.tolist() == pytest.approx([c.total_energy for c in best], rel=1e-12)
        assert fast.cycles.tolist() == [c.cycles for c in best]
        assert fast.total_latency_s == pytest.approx(nc.latency_s("best"))
        for i, df in enumerate(fast.dataflows):
            assert fast.cycles_by_dataflow[:, i].tolist() == [c.cycles for c in nc.costs(df)]


def test_caches_do_not_change_results_across_bit_widths_and_energies() -> None:
    acc = load_accelerator("eyeriss")
    first = cost_workload(USER_STYLE, acc)
    low = tuple(dataclasses.replace(s, weight_bits=4, act_bits=4) for s in USER_STYLE)
    cheap = dataclasses.replace(acc, energy=dataclasses.replace(acc.energy, dram=50.0))
    warm_low, warm_cheap = cost_workload(low, acc), cost_workload(USER_STYLE, cheap)
    clear_caches()
    assert cost_workload(low, acc).energy.tolist() == warm_low.energy.tolist()
    assert cost_workload(USER_STYLE, cheap).energy.tolist() == warm_cheap.energy.tolist()
    assert cost_workload(USER_STYLE, acc).energy.tolist() == first.energy.tolist()
    assert warm_low.total_energy < first.total_energy and warm_cheap.total_energy < first.total_energy


def test_tpu_preset_in_8_bit_words_costs_what_the_16_bit_word_description_costs() -> None:
    tpu = load_accelerator("tpu")
    assert (tpu.word_bits, tpu.reference_bits) == (8, 8)
    as16 = dataclasses.replace(tpu, word_bits=16, reference_bits=16, glb_bandwidth=64.0, dram_bandwidth=16.0,
                               energy=EnergyTable(dram=200.0, glb=6.0, noc=2.0, rf=1.0, mac=1.0))
    for layer in USER_STYLE:
        for df in tpu.dataflows:
            a, b = evaluate_layer(layer, tpu, df), evaluate_layer(layer, as16, df)
            assert a.total_energy == pytest.approx(b.total_energy, rel=1e-12)
            assert a.cycles == b.cycles
            assert a.accesses["dram"] == pytest.approx(2 * b.accesses["dram"])   # counted in 8-bit words

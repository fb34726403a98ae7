"""Layer cost: golden energies and cycles of a tiny layer, the DRAM tiling search against an explicit
loop-nest simulation, objectives, sparsity and bad input."""

from __future__ import annotations

import itertools

import pytest

from crosslayer.hw.accelerator import Accelerator, EnergyTable, load_accelerator
from crosslayer.hw.errors import HardwareConfigError, MappingError
from crosslayer.hw.mapping import dram_tiling, evaluate_layer
from crosslayer.hw.network import evaluate_network
from crosslayer.hw.shapes import LayerShape, conv, linear
from crosslayer.hw.sparsity import SparsityConfig


def tiny(kind: str = "systolic", glb: int = 4096, rf: int = 8, dataflows: tuple[str, ...] = ("WS", "OS", "IS"),
         ) -> Accelerator:
    return Accelerator(name="tiny", kind=kind, rows=4, cols=4, clock_mhz=100.0, rf_bytes=rf, glb_bytes=glb,
                       dram_bytes=1 << 20, glb_bandwidth=8.0, dram_bandwidth=2.0, energy=EnergyTable(),
                       dataflows=dataflows)  # type: ignore[arg-type]


def test_golden_fc_layer_output_stationary() -> None:
    c = evaluate_layer(linear("fc", 10, 4), tiny(), "OS")
    # DRAM: 40 weights + 10 inputs + 4 outputs (16-bit words) fetched once = 54 words
    assert c.accesses["dram"] == pytest.approx(54)
    # GLB: 54 fills/drains + 10 input + 40 weight reads + 4 output writes
    assert c.accesses["glb"] == pytest.approx(108)
    assert c.accesses["noc"] == pytest.approx(84)        # 40 input + 40 weight hops + 4 drained outputs
    assert c.accesses["rf"] == pytest.approx(160)        # 2 operand reads + psum read/write per MAC
    assert c.energy == pytest.approx({"dram": 10800, "glb": 648, "noc": 168, "rf": 160, "mac": 40})
    assert c.compute_cycles == 10 + 4 + 4 - 2            # one fold: T + rows + cols - 2
    assert c.cycles == 27 and c.bound == "dram"          # 54 words at 2 words / cycle
    assert c.utilization == pytest.approx(40 / (27 * 16))


def test_golden_fc_layer_weight_stationary_spills_psums_between_row_folds() -> None:
    c = evaluate_layer(linear("fc", 10, 4), tiny(), "WS")
    # T = 10 on 4 rows: 3 row folds, partial sums written 3x and read back 2x
    assert c.accesses["glb"] == pytest.approx(54 + 40 + 10 + 4 * 5)
    assert c.accesses["noc"] == pytest.approx(40 + 40 + 40)
    assert c.accesses["rf"] == pytest.approx(80)
    assert c.compute_cycles == 3 * (1 + 2 * 4 + 4 - 2)


def _simulate(layer: LayerShape, order: tuple[str, ...], mt: int, pt: int, ct: int) -> int:
    """Values moved between DRAM and the buffer by an explicit walk of the tiled loop nest: a tile is
    fetched when the operand's tile index changes; an output tile is written back when it leaves and read
    back when it returns (partial sums)."""
    m, c, pp = layer.out_channels, layer.in_channels, layer.out_h
    r, s, st, w_in, q = layer.kernel_h, layer.kernel_w, layer.stride, layer.in_w, layer.out_w
    ranges = {"m": range(0, m, mt), "p": range(0, pp, pt), "c": range(0, c, ct)}
    cur: dict[str, tuple[int, int] | None] = {"w": None, "i": None, "o": None}
    out_size: dict[tuple[int, int], int] = {}
    moved = 0
    for idx in itertools.product(*(ranges[d] for d in order)):
        at = dict(zip(order, idx, strict=True))
        ml, pl, cl = min(mt, m - at["m"]), min(pt, pp - at["p"]), min(ct, c - at["c"])
        if cur["w"] != (at["m"], at["c"]):
            moved += ml * cl * r * s
            cur["w"] = (at["m"], at["c"])
        if cur["i"] != (at["p"], at["c"]):
            moved += cl * ((pl - 1) * st + r) * w_in
            cur["i"] = (at["p"], at["c"])
        key = (at["m"], at["p"])
        if cur["o"] != key:
            if cur["o"] is not None:
                moved += out_size[cur["o"]]                  # write back (partial or final)
            if key in out_size:
                moved += out_size[key]                       # read the partial sums back
            out_size[key] = ml * pl * q
            cur["o"] = key
    last = cur["o"]
    assert last is not None
    return moved + out_size[last]


def test_dram_tiling_search_matches_exhaustive_loop_nest_simulation() -> None:
    layer = conv("c", 5, 6, 6, 3)                 # C = 5, M = 6, 6x6 input, 3x3 kernel -> P = Q = 4
    acc = tiny(glb=200)                           # 1600 bits: forces tiling
    best = dram_tiling(layer, acc)
    moved = []
    for mt, pt, ct in itertools.product(range(1, 7), range(1, 5), range(1, 6)):
        foot = 16 * (mt * ct * 9 + ct * ((pt - 1) + 3) * 6 + mt * pt * 4)
        if foot <= acc.glb_bytes * 8:
            moved += [_simulate(layer, order, mt, pt, ct) for order in itertools.permutations("mpc")]
    total_bits = best["weight_bits"] + best["input_bits"] + best["output_bits"]
    assert total_bits == pytest.approx(16 * min(moved))
    assert min(moved) > layer.weight_count + layer.input_count + layer.output_count   # the buffer is too small


def test_layer_that_fits_no_tiling_names_the_buffer() -> None:
    with pytest.raises(MappingError, match="fits no tiling.*glb_bytes = 16"):
        evaluate_layer(conv("big", 3, 8, 32, 7), tiny(glb=16), "WS")


def test_rs_needs_a_register_file_for_one_filter_row() -> None:
    acc = tiny(kind="spatial", rf=4, dataflows=("RS", "WS"))
    with pytest.raises(MappingError, match="fits no RS mapping.*rf_bytes = 4"):
        evaluate_layer(conv("c", 2, 2, 8, 3), acc, "RS")
    assert evaluate_layer(conv("c", 2, 2, 8, 3), acc, "WS").total_energy > 0


def test_unknown_or_unsupported_dataflow_and_bad_sizes() -> None:
    with pytest.raises(MappingError, match="'RS' is not supported by accelerator 'tiny'; allowed: WS, OS, IS"):
        evaluate_layer(linear("fc", 4, 4), tiny(), "RS")
    with pytest.raises(HardwareConfigError, match="dataflow 'XX' is unknown"):
        evaluate_layer(linear("fc", 4, 4), tiny(), "XX")
    with pytest.raises(HardwareConfigError, match="layer 'fc': in_channels = -3 must be a positive integer"):
        linear("fc", -3, 4)
    with pytest.raises(HardwareConfigError, match="layer 'c': kernel_h = 0 must be a positive integer"):
        LayerShape(name="c", kind="conv", in_channels=1, out_channels=1, in_h=4, in_w=4, kernel_h=0)


def test_fewer_bits_and_skipped_zeros_cost_less() -> None:
    acc = load_accelerator("eyeriss")
    dense = evaluate_layer(conv("c", 20, 50, 12, 5), acc, "RS")
    q8 = evaluate_layer(conv("c", 20, 50, 12, 5, weight_bits=8, act_bits=8), acc, "RS")
    assert q8.energy["mac"] == pytest.approx(dense.energy["mac"] / 4)
    assert q8.energy["dram"] < dense.energy["dram"]
    sparse = conv("c", 20, 50, 12, 5, weight_density=0.25)
    skipped = evaluate_layer(sparse, acc, "RS", sparsity=SparsityConfig(skip="weights"))
    assert skipped.energy["mac"] == pytest.approx(dense.energy["mac"] * 0.25)
    assert skipped.compute_cycles < dense.compute_cycles
    assert skipped.tiling["weight_storage_ratio"] < 0.5      # 25 % non-zeros + 4-bit indices
    gated = evaluate_layer(sparse, acc, "RS")                  # no skipping: zeros cost like values
    assert gated.total_energy == pytest.approx(dense.total_energy)


def test_latency_objective_never_slower_than_energy_objective() -> None:
    acc = load_accelerator("eyeriss")
    layer = conv("c", 32, 64, 14, 3, padding=1)
    e = evaluate_layer(layer, acc, "RS", objective="energy")
    t = evaluate_layer(layer, acc, "RS", objective="latency")
    assert t.cycles <= e.cycles
    assert e.total_energy <= t.total_energy


def test_network_best_per_layer_beats_every_single_dataflow() -> None:
    acc = load_accelerator("tpu")
    wl = (conv("c1", 1, 20, 28, 5), conv("c2", 20, 50, 12, 5), linear("f1", 800, 500), linear("f2", 500, 10))
    nc = evaluate_network(wl, acc)
    assert nc.macs == 288_000 + 1_600_000 + 400_000 + 5_000
    for df in nc.dataflows:
        assert nc.energy("best") <= nc.energy(df) + 1e-6
    assert nc.best_dataflow() in acc.dataflows
    assert sum(nc.breakdown("OS").values()) == pytest.approx(nc.energy("OS"))
    with pytest.raises(MappingError, match="workload is empty"):
        evaluate_network((), acc)

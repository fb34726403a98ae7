"""Hardware model: speed of the cost model, SCALE-Sim (ideal and realistic memory), ZigZag, the Eyeriss AlexNet
breakdown, and pruned + 8-bit LeNet-5 against a dense baseline at the accelerator's own precision.

1. Speed (``speed_*``): the full cost of a layer (every dataflow the accelerator supports, best mapping of each,
   energy per level and latency, the best dataflow) with ``crosslayer.hw.cost_workload``, in three situations,
   interleaved over rounds: *cold* (every cache emptied first: each layer shape is new), *search* (shapes seen
   before, new bit widths and densities per layer at each call, as a co-design search calls it), *warm* (the
   same configuration again). Peak traced memory of a cold call beside it.
2. SCALE-Sim 3.0.0, in its own virtual environment, on the conv and fc layers of LeNet-5, SmallVGG and varied
   shapes on a 32 x 32 array under OS, WS, IS: (a) ideal memory (64 MB SRAMs, 1000 words / cycle): compute
   cycles of the closed form against the simulator; (b) the TPU preset's memory (1 MB split 384 / 512 / 128 kB,
   32 B / cycle split 12 / 12 / 8): total cycles with stalls and prefetch, memory cycles and DRAM traffic against
   our full cost on the same preset, 8-bit layers. Timing: SCALE-Sim's ``run_scale`` (a cycle-by-cycle simulation
   of demand matrices through the SRAM buffers that writes report CSVs, which we read back) against our closed
   form (``evaluate_layer`` with emptied caches), per (layer, dataflow), interleaved rounds.
3. ZigZag 3.9.1 (its API defaults: LOMA temporal-mapping search, energy objective) on LeNet-5 and SmallVGG layers
   with our TPU preset written as a ZigZag accelerator (per-PE registers, the 1 MB buffer, DRAM, our per-bit
   energies and bandwidths) and the TPU's weight-stationary spatial mapping; ours: the same layers under WS.
4. AlexNet's conv layers under RS on the Eyeriss-like preset next to the published DRAM accesses per MAC.
5. LeNet-5 (the shared baseline recipe) pruned (Han et al. 2015 per-layer kept fractions) + 8-bit against the
   dense model costed at the accelerator's own precision (16 bits on Eyeriss, 8 on the TPU preset); the ratio
   against a dense fp32 model is kept beside it, named as such.

Run: ``python benchmarks/hardware.py`` -> benchmarks/results/hardware.json (nothing else running)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, merge_results, peak_rss_mb, quiet_machine, shared_mnist_baseline, write_results
from _hw_peers import run_scalesim, run_zigzag
from crosslayer.hw import (
    LayerShape,
    SparsityConfig,
    conv,
    cost_workload,
    evaluate_layer,
    gemm_timing,
    linear,
    load_accelerator,
)
from crosslayer.hw.costing import clear_caches

ROWS = COLS = 32
IDEAL_MEMORY = {"ifmap_kb": 65536, "filter_kb": 65536, "ofmap_kb": 65536, "ifmap_bw": 1000, "filter_bw": 1000,
                "ofmap_bw": 1000}
# the TPU preset's memory: 1 MB of SRAM, 32 bytes (8-bit words) per cycle from DRAM
TPU_MEMORY = {"ifmap_kb": 384, "filter_kb": 512, "ofmap_kb": 128, "ifmap_bw": 12, "filter_bw": 12, "ofmap_bw": 8}


def lenet_layers() -> list[LayerShape]:
    return [conv("lenet5.conv1", 1, 20, 28, 5), conv("lenet5.conv2", 20, 50, 12, 5),
            linear("lenet5.fc1", 800, 500), linear("lenet5.fc2", 500, 10)]


def vgg_layers() -> list[LayerShape]:
    return [conv("vgg.conv1", 1, 32, 28, 3, padding=1), conv("vgg.conv2", 32, 32, 28, 3, padding=1),
            conv("vgg.conv3", 32, 64, 14, 3, padding=1), conv("vgg.conv4", 64, 64, 14, 3, padding=1),
            linear("vgg.fc1", 64 * 7 * 7, 128), linear("vgg.fc2", 128, 10)]


def compare_layers() -> list[LayerShape]:
    """Conv and fc layers of LeNet-5 and SmallVGG (28x28 MNIST input) and varied shapes."""
    varied = [conv("v.c3_17x17_s2", 3, 17, 17, 3, stride=2), conv("v.c7_13x11", 7, 45, (13, 11), (3, 5)),
              conv("v.c33_9x9_1x1", 33, 65, 9, 1), conv("v.c5_31x31_k7_s3", 5, 31, 31, 7, stride=3),
              conv("v.c100_6x6", 100, 33, 6, 3), linear("v.fc_1000x37", 1000, 37), linear("v.fc_31x97", 31, 97),
              conv("v.c2_40x40_k4", 2, 3, 40, 4)]
    return lenet_layers() + vgg_layers() + varied


def at_bits(layers: list[LayerShape], bits: int) -> list[LayerShape]:
    return [dataclasses.replace(s, weight_bits=bits, act_bits=bits) for s in layers]


ALEXNET = [conv("conv1", 3, 96, 227, 11, stride=4, batch=4),
           conv("conv2", 96, 256, 27, 5, padding=2, groups=2, batch=4),
           conv("conv3", 256, 384, 13, 3, padding=1, batch=4),
           conv("conv4", 384, 384, 13, 3, padding=1, groups=2, batch=4),
           conv("conv5", 384, 256, 13, 3, padding=1, groups=2, batch=4)]


def _load() -> float:
    import os

    return os.getloadavg()[0]


# --- 1. speed ---------------------------------------------------------------------------------------------
def speed_section(rounds: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    workloads = {"mnist_models": compare_layers(), "alexnet_batch4": list(ALEXNET)}
    rng = random.Random(0)
    sp = SparsityConfig(skip="both")
    calls = 20

    def variant(layers: list[LayerShape]) -> list[LayerShape]:
        return [dataclasses.replace(s, weight_bits=rng.choice([2, 3, 4, 5, 6, 8]), act_bits=rng.choice([4, 6, 8]),
                                    weight_density=rng.uniform(0.05, 1.0), act_density=rng.uniform(0.3, 1.0))
                for s in layers]

    situations = ("cold", "search", "warm", "evaluate_layer_pairs_cold")
    raw = {w: {p: {k: [] for k in situations} for p in ("eyeriss", "tpu")} for w in workloads}
    cpu = {w: {p: {k: [] for k in situations} for p in ("eyeriss", "tpu")} for w in workloads}
    load_before = _load()

    def timed(w: str, preset: str, key: str, count: int, fn: Any) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        raw[w][preset][key].append(count / (time.perf_counter() - w0))
        cpu[w][preset][key].append(count / max(time.process_time() - c0, 1e-9))

    for _ in range(rounds):
        for w, layers in workloads.items():               # workloads, presets and situations interleave
            for preset in ("eyeriss", "tpu"):
                acc = load_accelerator(preset)
                clear_caches()
                timed(w, preset, "cold", len(layers), lambda a=acc, ls=layers: cost_workload(ls, a, sparsity=sp))
                variants = [variant(layers) for _ in range(calls)]
                timed(w, preset, "search", len(layers) * calls,
                      lambda a=acc, vs=variants: [cost_workload(v, a, sparsity=sp) for v in vs])
                timed(w, preset, "warm", len(layers) * calls,
                      lambda a=acc, ls=layers: [cost_workload(ls, a, sparsity=sp) for _ in range(calls)])
                clear_caches()
                timed(w, preset, "evaluate_layer_pairs_cold", len(layers) * len(acc.dataflows),
                      lambda a=acc, ls=layers: [evaluate_layer(s, a, df, sparsity=sp) for s in ls
                                                for df in a.dataflows])
    peak = {}
    for w, layers in workloads.items():
        for preset in ("eyeriss", "tpu"):
            clear_caches()
            tracemalloc.start()
            cost_workload(layers, load_accelerator(preset), sparsity=sp)
            peak[f"{w}_{preset}"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    med = {w: {p: {k: statistics.median(v) for k, v in r.items()} for p, r in d.items()} for w, d in raw.items()}
    med_cpu = {w: {p: {k: statistics.median(v) for k, v in r.items()} for p, r in d.items()}
               for w, d in cpu.items()}
    head = med["mnist_models"]
    return {
        "speed_workloads": {w: [s.name for s in ls] for w, ls in workloads.items()}, "speed_rounds": rounds,
        "speed_full_layer_costs_per_second": med,
        "full_layer_costs_per_second_search": min(m["search"] for m in head.values()),
        "full_layer_costs_per_second_cold": min(m["cold"] for m in head.values()),
        "full_layer_costs_per_second_warm": min(m["warm"] for m in head.values()),
        "full_layer_costs_per_second_search_alexnet": min(m["search"] for m in med["alexnet_batch4"].values()),
        "speed_full_layer_costs_per_cpu_second": med_cpu,
        "speed_raw_rounds": raw, "speed_raw_rounds_cpu": cpu, "speed_peak_traced_mib_cold_call": peak,
        "speed_load_average_1min_before": load_before,
        "speed_note": (
            "One full layer cost = one layer on one accelerator under every dataflow it supports (Eyeriss-like: "
            "RS, WS, OS; TPU-like: WS, OS, IS), the best mapping of each (DRAM tiling, RS register-file mapping), "
            "energy per level and latency, and the best dataflow: crosslayer.hw.cost_workload, zero-skipping of "
            "both operands. Workloads: mnist_models = the 18 conv / fc layers of LeNet-5, SmallVGG and varied "
            "shapes (the scale of the models this project trains); alexnet_batch4 = AlexNet's 5 convolutions at "
            "batch 4 (large tiling grids), reported beside it. cold: every cache emptied before the call; search: "
            f"the same layer shapes with new random bit widths and densities per layer at each of {calls} calls "
            "(the co-design search's pattern: every tiling is searched anew); warm: the same configuration again. "
            "full_layer_costs_per_second_* take mnist_models on the slower preset. evaluate_layer_pairs_cold: one "
            "(layer, dataflow) per call with LayerCost objects, caches emptied (the unit of the old 484/s "
            "figure). Medians of the rounds, one thread, raw rounds kept; per wall-clock second and per CPU "
            "second of this process; peak traced memory of one cold call (tracemalloc)."),
    }


# --- 2. SCALE-Sim -----------------------------------------------------------------------------------------
def _ours_full(layer: LayerShape, acc: Any, df: str) -> Any:
    return evaluate_layer(layer, acc, df)


def scalesim_section(rounds: int) -> dict[str, Any]:
    layers = compare_layers()
    tpu = load_accelerator("tpu")
    assert (tpu.rows, tpu.cols) == (ROWS, COLS)
    # (a) ideal memory: compute cycles only
    ideal = {(r["layer"], r["dataflow"]): r for r in run_scalesim(layers, rows=ROWS, cols=COLS, memory=IDEAL_MEMORY,
                                                                   tag="ideal")}
    rows_ideal = []
    for layer in layers:
        _, sr, t, sc = layer.gemm()
        for df in ("OS", "WS", "IS"):
            r = ideal[(layer.name.replace(".", "_"), df)]
            ours = gemm_timing(df, sr, t, sc, ROWS, COLS).cycles
            rows_ideal.append({"layer": layer.name, "dataflow": df, "Sr": sr, "T": t, "Sc": sc, "ours_cycles": ours,
                               "scalesim_total_cycles": r["total_cycles"], "scalesim_stall_cycles": r["stall_cycles"],
                               "rel_error": abs(ours - r["total_cycles"]) / r["total_cycles"]})
    worst_i = max(rows_ideal, key=lambda x: x["rel_error"])
    # (b) the TPU preset's memory, 8-bit layers (SCALE-Sim's words are bytes)
    l8 = at_bits(layers, 8)
    real = {(r["layer"], r["dataflow"]): r for r in run_scalesim(l8, rows=ROWS, cols=COLS, memory=TPU_MEMORY,
                                                                  tag="tpu-memory")}
    rows_real = []
    for layer in l8:
        for df in ("OS", "WS", "IS"):
            r = real[(layer.name.replace(".", "_"), df)]
            c = _ours_full(layer, tpu, df)
            theirs_compute = r["total_cycles"] - r["stall_cycles"]
            theirs_mem = r["cycles_incl_prefetch"] - theirs_compute
            theirs_dram = r["dram_ifmap_reads"] + r["dram_filter_reads"] + r["dram_ofmap_writes"]
            rows_real.append({
                "layer": layer.name, "dataflow": df, "ours_cycles": c.cycles, "ours_compute_cycles": c.compute_cycles,
                "ours_memory_cycles": c.cycles - c.compute_cycles, "ours_dram_words": c.accesses["dram"],
                "ours_bound": c.bound, "scalesim_cycles_incl_prefetch": r["cycles_incl_prefetch"],
                "scalesim_total_cycles": r["total_cycles"], "scalesim_stall_cycles": r["stall_cycles"],
                "scalesim_memory_cycles": theirs_mem, "scalesim_dram_words": theirs_dram,
                "scalesim_dram": {k: r[k] for k in ("dram_ifmap_reads", "dram_filter_reads", "dram_ofmap_writes")},
                "rel_error": abs(c.cycles - r["cycles_incl_prefetch"]) / r["cycles_incl_prefetch"],
                "cycle_ratio": c.cycles / r["cycles_incl_prefetch"], "dram_ratio": c.accesses["dram"] / theirs_dram})
    worst_r = max(rows_real, key=lambda x: x["rel_error"])
    with_stalls = [x for x in rows_real if x["scalesim_stall_cycles"] > 0]
    # timing, interleaved: SCALE-Sim's simulation vs our closed form, LeNet-5's layers under OS / WS / IS
    timed = at_bits(lenet_layers(), 8)
    t_theirs: list[float] = []
    t_ours: list[float] = []
    for _ in range(rounds):
        res = run_scalesim(timed, rows=ROWS, cols=COLS, memory=TPU_MEMORY, tag="timing")
        t_theirs.append(sum(r["seconds"] for r in res))
        t0 = time.perf_counter()
        for layer in timed:
            for df in ("OS", "WS", "IS"):
                clear_caches()
                _ours_full(layer, tpu, df)
        t_ours.append(time.perf_counter() - t0)
    pairs = len(timed) * 3
    return {
        "scalesim_version": "3.0.0", "array": f"{ROWS}x{COLS}",
        "scalesim_layers_compared": [s.name for s in layers], "scalesim_layer_dataflow_pairs": len(rows_ideal),
        "scalesim_worst_cycle_error": worst_i["rel_error"],
        "scalesim_worst_case": {k: worst_i[k] for k in ("layer", "dataflow", "ours_cycles", "scalesim_total_cycles")},
        "scalesim_mean_cycle_error": statistics.fmean(x["rel_error"] for x in rows_ideal),
        "scalesim_ideal_memory": IDEAL_MEMORY, "scalesim_rows": rows_ideal,
        "scalesim_realistic_memory": {**TPU_MEMORY, "note": "the TPU preset's 1 MB buffer and 32 B/cycle DRAM, "
                                      "split over SCALE-Sim's three SRAMs and channels; layers at 8 bits"},
        "scalesim_total_cycle_error_with_stalls": worst_r["rel_error"],
        "scalesim_total_cycle_error_with_stalls_median": statistics.median(x["rel_error"] for x in rows_real),
        "scalesim_cycle_ratio_median": statistics.median(x["cycle_ratio"] for x in rows_real),
        "scalesim_worst_case_with_stalls": {k: worst_r[k] for k in ("layer", "dataflow", "ours_cycles",
                                                                     "scalesim_cycles_incl_prefetch")},
        "scalesim_pairs_with_stalls": len(with_stalls),
        "scalesim_total_cycle_error_where_stalls_median": (statistics.median(x["rel_error"] for x in with_stalls)
                                                           if with_stalls else None),
        "scalesim_dram_ratio_median": statistics.median(x["dram_ratio"] for x in rows_real),
        "scalesim_dram_ratio_range": [min(x["dram_ratio"] for x in rows_real),
                                      max(x["dram_ratio"] for x in rows_real)],
        "scalesim_realistic_rows": rows_real,
        "scalesim_seconds_per_pair": statistics.median(t_theirs) / pairs,
        "ours_closed_form_seconds_per_pair": statistics.median(t_ours) / pairs,
        "speedup_vs_scalesim": statistics.median(t_theirs) / statistics.median(t_ours),
        "scalesim_timing_raw_rounds": {"scalesim_seconds": t_theirs, "ours_seconds": t_ours, "pairs": pairs},
        "timing_note": (
            f"Per round, LeNet-5's {len(timed)} layers x OS/WS/IS at 8 bits on the TPU preset's memory; medians of "
            f"{rounds} interleaved rounds. SCALE-Sim: wall time of scalesim(...).run_scale per (layer, dataflow), "
            "a cycle-level simulation of the demand matrices through double-buffered SRAMs that writes "
            "COMPUTE/BANDWIDTH/DETAILED_ACCESS report CSVs (save_disk_space=True: no trace files), not counting "
            "the Python start-up; ours: evaluate_layer (closed-form counts, tiling search, energy, latency) with "
            "every cache emptied before each (layer, dataflow). The two are different kinds of tool: a closed "
            "form against a cycle simulator."),
    }


# --- 3. ZigZag --------------------------------------------------------------------------------------------
def zigzag_section() -> dict[str, Any]:
    tpu = load_accelerator("tpu")
    layers = at_bits(lenet_layers() + vgg_layers(), 8)
    theirs = run_zigzag(layers, tpu, 8)
    by_name = {r["layer"]: r for r in theirs["layers"]}
    rows = []
    t_ours = []
    for layer in layers:
        t0 = time.perf_counter()
        clear_caches()
        c = evaluate_layer(layer, tpu, "WS")
        t_ours.append(time.perf_counter() - t0)
        z = by_name[layer.name.replace(".", "_")]
        rows.append({"layer": layer.name, "ours_energy": c.total_energy, "zigzag_energy": z["energy"],
                     "energy_ratio": c.total_energy / z["energy"], "ours_cycles": c.cycles,
                     "zigzag_cycles": z["latency_cycles"], "zigzag_ideal_cycles": z["ideal_cycles"],
                     "latency_ratio": c.cycles / z["latency_cycles"],
                     "ours_energy_by_level": c.energy, "zigzag_mac_energy": z["mac_energy"],
                     "zigzag_memory_energy": z["memory_energy"], "zigzag_seconds": z["seconds"]})
    return {
        "independent_model": {"name": "ZigZag (zigzag-dse)", "version": theirs["version"]},
        "independent_layers_compared": [s.name for s in layers],
        "independent_energy_ratio_median": statistics.median(x["energy_ratio"] for x in rows),
        "independent_latency_ratio_median": statistics.median(x["latency_ratio"] for x in rows),
        "independent_energy_ratio_range": [min(x["energy_ratio"] for x in rows), max(x["energy_ratio"] for x in rows)],
        "independent_latency_ratio_range": [min(x["latency_ratio"] for x in rows),
                                            max(x["latency_ratio"] for x in rows)],
        "independent_rows": rows,
        "independent_setup": (
            "Ours / ZigZag per layer. The TPU preset (32x32, 8-bit words, 1 MB buffer, 32 B/cycle DRAM, per-bit "
            "energies of the Eyeriss table) written as a ZigZag accelerator: per-PE weight, input and psum "
            "registers at our RF energy, one global buffer for all operands at our GLB energy and bandwidth, DRAM "
            "at ours; MAC 8x8 at ours. ZigZag's TPU-like spatial mapping (K over columns, C over rows: weight "
            "stationary) and its API defaults (LOMA, lpf_limit 6, energy objective); ours: WS, energy objective. "
            "ZigZag's latency is latency_total2 (on-loading, compute with memory stalls, off-loading)."),
        "zigzag_seconds_per_layer_median": statistics.median(x["zigzag_seconds"] for x in rows),
        "ours_seconds_per_layer_median_cold": statistics.median(t_ours),
        "zigzag_timing_note": "one run per layer (ZigZag's search is deterministic); its wall time includes "
                              "parsing the YAML inputs and the mapping search; ours with emptied caches",
    }


# --- 4. Eyeriss / AlexNet ---------------------------------------------------------------------------------
def eyeriss_section() -> dict[str, Any]:
    acc = load_accelerator("eyeriss")
    levels = ("dram", "glb", "noc", "rf", "mac")
    tot = dict.fromkeys(levels, 0.0)
    per_layer = []
    macs = dram = 0.0
    for layer in ALEXNET:
        c = evaluate_layer(layer, acc, "RS")
        macs += layer.macs
        dram += c.accesses["dram"]
        for k in levels:
            tot[k] += c.energy[k]
        per_layer.append({"layer": layer.name, "macs": layer.macs,
                          "dram_accesses_per_mac": c.accesses["dram"] / layer.macs,
                          "utilization": c.utilization, "fraction": {k: c.energy[k] / c.total_energy for k in levels},
                          "rs_mapping": {k: c.tiling[k] for k in ("p", "q", "t", "u", "e")}})
    s = sum(tot.values())
    return {
        "alexnet_conv_rs_energy_fraction": {k: v / s for k, v in tot.items()},
        "alexnet_conv_rs_dram_accesses_per_mac": dram / macs,
        "eyeriss_published_dram_accesses_per_mac": 0.0029,
        "eyeriss_published_source": "Chen et al., JSSC 2017 (Eyeriss chip, AlexNet CONV layers, batch 4, 16-bit)",
        "differences_explained": (
            "Eyeriss's chip compresses zero activations with run-length coding and gates zero MACs (about "
            "half of AlexNet's ReLU outputs), which cuts its DRAM traffic; our run is dense 16-bit, so our DRAM "
            "accesses per MAC are higher. Our RF term counts 4 accesses per MAC (weight, input, psum read and "
            "write) plus fills, like the ISCA 2016 model; the NoC term multicasts each weight row to every PE of "
            "its row; pooling, ReLU and the FC layers are not part of this comparison."),
        "alexnet_per_layer": per_layer,
    }


# --- 5. LeNet-5 pruned + 8-bit against dense at the accelerator's precision --------------------------------
HAN_KEPT = {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}   # Han et al., NIPS 2015, Table 2


def lenet_section() -> dict[str, Any]:
    import copy

    import torch
    from torch import nn

    from crosslayer.hw.analysis import analyse_model
    from crosslayer.quant.fixed_point import FixedPointSpec
    from crosslayer.quant.layers import calibrating, quantize_model
    from crosslayer.train import TrainConfig, evaluate, fit

    data, dense, trained = shared_mnist_baseline("lenet5")
    comp = copy.deepcopy(dense)
    masks = {}
    with torch.no_grad():
        for name, mod in comp.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                k = int((1 - HAN_KEPT[name]) * mod.weight.numel())
                thr = mod.weight.abs().flatten().kthvalue(k).values
                masks[name] = (mod.weight.abs() > thr).float()
                mod.weight.mul_(masks[name])

    def reapply(model: nn.Module) -> None:
        with torch.no_grad():
            for name, mod in model.named_modules():
                if name in masks:
                    mod.weight.mul_(masks[name])

    fit(comp, data.train, data.val, TrainConfig(epochs=2, batch_size=64, lr=0.001, optimizer="adam",
                                                weight_decay=0.0), seed=0, on_step=reapply, desc="retrain")
    quantize_model(comp, FixedPointSpec(bits=8), FixedPointSpec(bits=8, signed=False, symmetric=False))
    with calibrating(comp):
        comp(data.train.images[:1000])
    inputs = data.test.images[:256]
    out: dict[str, Any] = {"lenet5_training": {**BASELINE_RECIPES["lenet5"], "cached": trained.cached},
                           "lenet5_dense_test_accuracy": evaluate(dense, data.test).accuracy,
                           "lenet5_compressed_test_accuracy": evaluate(comp, data.test).accuracy,
                           "lenet5_test_images": len(data.test), "lenet5_kept_fraction": HAN_KEPT,
                           "compressed_skip": "both"}
    for preset in ("eyeriss", "tpu"):
        acc = load_accelerator(preset)
        d = analyse_model(dense, inputs, acc, sparsity=SparsityConfig(skip="none")).cost   # acc.reference_bits
        d32 = analyse_model(dense, inputs, acc, sparsity=SparsityConfig(skip="none"), float_bits=32).cost
        c = analyse_model(comp, inputs, acc, sparsity=SparsityConfig(skip="both")).cost
        out[f"{preset}_dense_bits"] = acc.reference_bits
        for df in (*acc.dataflows, "best"):
            out[f"{preset}_{df}_energy_ratio"] = c.energy(df) / d.energy(df)
            out[f"{preset}_{df}_latency_ratio"] = c.cycles(df) / d.cycles(df)
            out[f"{preset}_{df}_dense_energy"] = d.energy(df)
            out[f"{preset}_{df}_compressed_energy"] = c.energy(df)
            out[f"{preset}_{df}_energy_ratio_vs_fp32_dense"] = c.energy(df) / d32.energy(df)
        out[f"{preset}_best_dataflow_dense"] = d.best_dataflow()
        out[f"{preset}_best_dataflow_compressed"] = c.best_dataflow()
    out["lenet5_ratio_note"] = ("energy / latency ratios: pruned + 8-bit (zeros skipped) over the dense model at the "
                                "accelerator's own precision (<preset>_dense_bits); *_vs_fp32_dense keeps the older, "
                                "unfair comparison against 32-bit dense for reference only")
    return out


def merge_section(section: dict[str, Any], key: str, command: str) -> None:
    """Write ``section`` into hardware.json over the last full run's file, saying which command re-measured it."""
    merge_results("hardware", {**section, key: (
        f"this section was re-measured alone ({command}); the sections not re-measured are from the last full "
        "run or their own partial runs")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds (medians quoted, raw rounds kept)")
    ap.add_argument("--skip-peers", action="store_true",
                    help="no SCALE-Sim / ZigZag: print the other sections, write no results file")
    ap.add_argument("--speed-only", action="store_true",
                    help="re-measure only the cost model's speed; the other sections of hardware.json are kept")
    ap.add_argument("--lenet-only", action="store_true",
                    help="re-measure only the LeNet-5 energy ratios; the other sections of hardware.json are kept")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res: dict[str, Any] = {"command": " ".join(["python benchmarks/hardware.py", *sys.argv[1:]]),
                           "settings": {"rounds": args.rounds, "skip_peers": args.skip_peers},
                           "seed": 0,  # the LeNet-5 baseline's training and the pruned model's retraining
                           "rounds": args.rounds}
    if args.speed_only:
        with quiet_machine():
            speed = speed_section(args.rounds)
        merge_section(speed, "speed_measured_separately", f"`python benchmarks/hardware.py --speed-only`, "
                                                          f"{args.rounds} rounds")
        return
    if args.lenet_only:
        merge_section(lenet_section(), "lenet5_measured_separately", "`python benchmarks/hardware.py --lenet-only`")
        return
    with quiet_machine():
        res.update(speed_section(args.rounds))
    if not args.skip_peers:
        res.update(scalesim_section(args.rounds))
        res.update(zigzag_section())
    res.update(eyeriss_section())
    res.update(lenet_section())
    res["benchmark_seconds"] = time.perf_counter() - t0
    res["peak_rss_mib"] = peak_rss_mb()
    if args.skip_peers:                      # a partial run does not replace the results file
        print(json.dumps(res, indent=2, default=str))
        return
    write_results("hardware", res)


if __name__ == "__main__":
    main()

"""Generated blocks of docs/hw.md: hardware.json (see benchmarks/render_docs.py)."""

from __future__ import annotations

from typing import Any

from _docgen import Loader, command_of, machine_line, num, pct, produced_by, ratio, table

USAGE = "flock /work/cpu.lock .venv/bin/python benchmarks/hardware.py"
PRESETS = {"eyeriss": "Eyeriss-like", "tpu": "TPU-like"}
SITUATIONS = (("search", "search: shapes seen before, new bit widths and densities per layer at every call"),
              ("warm", "warm: the same configuration again"), ("cold", "cold: every cache emptied, each shape new"),
              ("evaluate_layer_pairs_cold", "`evaluate_layer`, (layer, dataflow) pairs per second, cold"))


def _head(d: dict[str, Any]) -> str:
    return produced_by("hardware", command_of(d, USAGE)) + f" {machine_line(d)}."


WORKLOADS = {"mnist_models": "LeNet-5, SmallVGG and varied shapes", "alexnet_batch4": "AlexNet convolutions, batch 4"}


def speed(load: Loader) -> str:
    d = load("hardware")
    sp: dict[str, Any] = d["speed_full_layer_costs_per_second"]
    layers: dict[str, list[str]] = d["speed_workloads"]
    mem = d.get("speed_peak_traced_mib_cold_call", {})
    lines = [_head(d) + f" {d['speed_rounds']} interleaved rounds, medians, one thread; raw rounds in "
             "`speed_raw_rounds`; per CPU second in `speed_full_layer_costs_per_cpu_second`.", ""]
    for wl, per in sp.items():
        presets = [p for p in PRESETS if p in per]
        rows = [[label, *(num(per[p][key]) for p in presets)]
                for key, label in SITUATIONS if all(key in per[p] for p in presets)]
        lines += [f"{WORKLOADS.get(wl, wl)} ({len(layers.get(wl, []))} layers):", "",
                  table(["full layer costs per second", *(PRESETS[p] for p in presets)], rows), "",
                  "Peak traced memory of one cold call: "
                  + ", ".join(f"{mem[f'{wl}_{p}']:.1f} MiB ({PRESETS[p]})" for p in presets if f"{wl}_{p}" in mem)
                  + ".", ""]
    return "\n".join(lines).rstrip("\n")


def scalesim(load: Loader) -> str:
    d = load("hardware")
    w, ws = d["scalesim_worst_case"], d["scalesim_worst_case_with_stalls"]
    lo, hi = d["scalesim_dram_ratio_range"]
    rows = [[f"`{r['layer']}`", r["dataflow"], num(r["ours_compute_cycles"]), num(r["ours_memory_cycles"]),
             num(r["ours_dram_words"]), num(r["scalesim_total_cycles"]), num(r["scalesim_memory_cycles"]),
             num(r["scalesim_stall_cycles"]), num(r["scalesim_dram"]["dram_ifmap_reads"]),
             num(r["scalesim_dram"]["dram_filter_reads"]), num(r["scalesim_dram"]["dram_ofmap_writes"])]
            for r in d["scalesim_realistic_rows"] if str(r["layer"]).startswith("lenet5.")]
    return "\n".join([
        _head(d) + f" SCALE-Sim {d['scalesim_version']}, {d['array']} array.", "",
        f"- Ideal memory (compute cycles): {d['scalesim_layer_dataflow_pairs']} (layer, dataflow) pairs over "
        f"{len(d['scalesim_layers_compared'])} layers; worst relative error {d['scalesim_worst_cycle_error']:.4f} "
        f"(`{w['layer']}` {w['dataflow']}: ours {num(w['ours_cycles'])}, SCALE-Sim {num(w['scalesim_total_cycles'])}), "
        f"mean {d['scalesim_mean_cycle_error']:.4f}.",
        f"- The TPU preset's memory (total cycles with stalls and prefetch): worst relative error "
        f"{d['scalesim_total_cycle_error_with_stalls']:.3f} (`{ws['layer']}` {ws['dataflow']}: ours "
        f"{num(ws['ours_cycles'])}, SCALE-Sim {num(ws['scalesim_cycles_incl_prefetch'])}); median "
        f"{d['scalesim_total_cycle_error_with_stalls_median']:.3f}; ours / SCALE-Sim median "
        f"{d['scalesim_cycle_ratio_median']:.2f}. SCALE-Sim stalls in {d['scalesim_pairs_with_stalls']} of "
        f"{len(d['scalesim_realistic_rows'])} pairs (median error there "
        f"{d['scalesim_total_cycle_error_where_stalls_median']:.3f}). DRAM traffic ours / SCALE-Sim: median "
        f"{d['scalesim_dram_ratio_median']:.2f}, range {lo:.2f}-{hi:.2f}.", "",
        "LeNet-5 rows at the TPU preset's memory (cycles and words; `scalesim_realistic_rows` holds every layer):", "",
        table(["layer", "dataflow", "ours compute", "ours memory", "ours DRAM words", "SCALE-Sim total (stalls incl.)",
               "SCALE-Sim memory", "SCALE-Sim stalls", "SCALE-Sim ifmap reads", "filter reads", "ofmap writes"], rows),
    ])


def _zigzag_levels(row: dict[str, Any]) -> list[float] | None:
    """ZigZag's memory energy summed over operands per level, innermost first (registers, buffer, DRAM), when every
    operand has the same number of levels."""
    levels = list(row["zigzag_memory_energy"].values())
    if not levels or len({len(v) for v in levels}) != 1:
        return None
    return [sum(v[i] for v in levels) for i in range(len(levels[0]))]


def zigzag(load: Loader) -> str:
    d = load("hardware")
    rows_in: list[dict[str, Any]] = d["independent_rows"]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in rows_in:
        kinds.setdefault("conv" if ".conv" in r["layer"] else "fc", []).append(r)
    by_kind = "; ".join(
        f"{k} layers energy {min(r['energy_ratio'] for r in rs):.2f}-{max(r['energy_ratio'] for r in rs):.2f}, "
        f"latency {min(r['latency_ratio'] for r in rs):.2f}-{max(r['latency_ratio'] for r in rs):.2f}"
        for k, rs in kinds.items())
    rows = []
    for r in rows_in:
        lv = r["ours_energy_by_level"]
        z = _zigzag_levels(r)
        rows.append([f"`{r['layer']}`", num(r["ours_energy"]), num(r["zigzag_energy"]), f"{r['energy_ratio']:.2f}",
                     num(r["ours_cycles"]), num(r["zigzag_cycles"]), f"{r['latency_ratio']:.2f}",
                     num(lv.get("dram", 0)), num(lv.get("glb", 0)), num(lv.get("rf", 0) + lv.get("noc", 0)),
                     " / ".join(num(v) for v in z) if z else "not recorded"])
    e_lo, e_hi = d["independent_energy_ratio_range"]
    l_lo, l_hi = d["independent_latency_ratio_range"]
    m = d["independent_model"]
    return "\n".join([
        _head(d) + f" {m['name']} {m['version']}.", "",
        f"Ours / ZigZag per layer over {len(rows_in)} layers: energy median "
        f"{d['independent_energy_ratio_median']:.2f} (range {e_lo:.2f}-{e_hi:.2f}), latency median "
        f"{d['independent_latency_ratio_median']:.2f} (range {l_lo:.2f}-{l_hi:.2f}); {by_kind}.", "",
        table(["layer", "ours energy", "ZigZag energy", "ratio", "ours cycles", "ZigZag cycles", "ratio",
               "ours DRAM", "ours GLB", "ours RF + NoC", "ZigZag memory: registers / buffer / DRAM"], rows),
    ])


def timing(load: Loader) -> str:
    d = load("hardware")
    return "\n".join([
        _head(d), "",
        f"- SCALE-Sim: {d['scalesim_seconds_per_pair']:.2f} s per (layer, dataflow), median of "
        f"{len(d['scalesim_timing_raw_rounds']['scalesim_seconds'])} interleaved rounds (`timing_note`); ours "
        f"{1e3 * d['ours_closed_form_seconds_per_pair']:.2f} ms per pair; ratio {ratio(d['speedup_vs_scalesim'], 0)} "
        "(a closed form against a cycle simulator, not two tools of the same kind).",
        f"- ZigZag: {d['zigzag_seconds_per_layer_median']:.1f} s per layer, one run each (`zigzag_timing_note`); ours "
        f"{1e3 * d['ours_seconds_per_layer_median_cold']:.2f} ms.",
    ])


def energy(load: Loader) -> str:
    d = load("hardware")
    kept = ", ".join(f"{k} {v:g}" for k, v in d["lenet5_kept_fraction"].items())
    rows = []
    for p in PRESETS:
        if f"{p}_best_energy_ratio" not in d:
            continue
        rows.append([PRESETS[p], f"{d[f'{p}_dense_bits']} bits", f"{d[f'{p}_best_dataflow_dense']} / "
                     f"{d[f'{p}_best_dataflow_compressed']}", f"{d[f'{p}_best_energy_ratio']:.2f}",
                     f"{d[f'{p}_best_latency_ratio']:.2f}", f"{d[f'{p}_best_energy_ratio_vs_fp32_dense']:.2f}"])
    return "\n".join([
        _head(d) + f" LeNet-5 (shared recipe) on {num(d['lenet5_test_images'])} test images: dense "
        f"{pct(d['lenet5_dense_test_accuracy'])}, pruned (kept fractions {kept}) + 8-bit "
        f"{pct(d['lenet5_compressed_test_accuracy'])}; zeros skipped: {d['compressed_skip']}.", "",
        table(["preset", "dense at", "best dataflow dense / compressed", "energy ratio", "latency ratio",
               "energy ratio vs fp32 dense (older comparison, for reference)"], rows), "",
        f"{d['lenet5_ratio_note']}.",
    ])

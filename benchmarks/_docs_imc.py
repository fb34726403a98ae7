"""Generated blocks of docs/imc.md: imc.json and its robustness runs imc_seed1.json, imc_seed2.json,
imc_60epochs.json (see benchmarks/render_docs.py)."""

from __future__ import annotations

from typing import Any

from _docgen import Loader, command_of, machine_line, mean_sd, pct, pp, produced_by, table

USAGE = ".venv/bin/python benchmarks/imc.py"
SEED_RUNS = ("imc", "imc_seed1", "imc_seed2")
LONGER_RUN = "imc_60epochs"
IMC_SOURCES = ("imc",)
SEED_SOURCES = (*SEED_RUNS, LONGER_RUN)


def _pm(mean: float, sd: float) -> str:
    return f"{100 * mean:.2f} +- {100 * sd:.2f} %"


def _own_gap_pp(point: dict[str, Any]) -> float:
    """Loss of the variation-aware model on the crossbar against its own digital (noise-free) accuracy."""
    return 100 * (float(point["aware_clean_accuracy"]) - float(point["noisy_accuracy_aware"]))


def _headline_point(d: dict[str, Any]) -> dict[str, Any]:
    d2d = float(d["crossbar"]["d2d_sigma"]) if isinstance(d.get("crossbar"), dict) else None
    for p in d.get("variation_grid", []):
        if d2d is not None and abs(float(p["d2d_sigma"]) - d2d) < 1e-12:
            return dict(p)
    return d


def imc(load: Loader) -> str:
    d = load("imc")
    head_d2d = float(d["crossbar"]["d2d_sigma"])
    rows = []
    for p in d["variation_grid"]:
        mark = " (headline)" if abs(float(p["d2d_sigma"]) - head_d2d) < 1e-12 else ""
        rows.append([f"{p['d2d_sigma']:g} ({p['total_sigma']:.2f}){mark}",
                     _pm(p["noisy_accuracy_standard"], p["noisy_accuracy_standard_std"]), pp(p["drop_standard_pp"]),
                     pct(min(p["noisy_accuracy_standard_per_chip"])),
                     _pm(p["noisy_accuracy_aware"], p["noisy_accuracy_aware_std"]), pct(p["aware_clean_accuracy"]),
                     pp(p["gap_aware_pp"]), pp(_own_gap_pp(p)), pct(min(p["noisy_accuracy_aware_per_chip"]))])
    aw = d["aware_training"]
    cb = d["crossbar"]
    lines = [
        produced_by("imc", command_of(d, USAGE)) + f" {machine_line(d)}.", "",
        f"LeNet-5, {d['chips']} chips (seeds 0-{int(d['chips']) - 1}) on the {d['test_images']:,} test images; "
        f"crossbar {cb['levels']} levels, {cb['dac_bits']}-bit DAC / {cb['adc_bits']}-bit ADC, {cb['variation']} "
        f"variation, cycle-to-cycle sigma {cb['c2c_sigma']:g}. Conventional model: digital test accuracy "
        f"{pct(d['clean_accuracy'])}, on the crossbar without variation {pct(d['crossbar_no_variation_accuracy'])}. "
        f"Variation-aware: {aw['epochs']} epochs of {aw['optimizer']} at lr {aw['lr']:g} ({aw['schedule']}) from "
        f"the {aw['from']}, noise scales tried {aw['noise_scales_tried']} ({aw['selection']}). Mean +- sd are over "
        "chips (population sd); drops and gaps in pp.", "",
        table(["d2d sigma (total)", "conventional", "drop vs its clean", "conventional worst chip",
               "variation-aware", "aware, digital", "gap vs conventional clean", "gap vs its own clean",
               "aware worst chip"], rows), "",
        f"Headline rule ({'met' if d.get('headline_condition_met') else 'not met'}): {d['headline_rule']}. "
        f"The file's `gap_aware_pp` is measured against the conventional model's clean accuracy; the column "
        "\"gap vs its own clean\" measures the variation-aware model against its own digital accuracy.",
    ]
    return "\n".join(lines)


def imc_seeds(load: Loader) -> str:
    rows, drops, gaps, own, seeds, points = [], [], [], [], [], []
    for name in SEED_RUNS:
        d = load(name)
        p = _headline_point(d)
        seed = d.get("seed", "0 (the default)")
        seeds.append(str(seed))
        points.append(float(p["d2d_sigma"]))
        drops.append(float(p["drop_standard_pp"]))
        gaps.append(float(p["gap_aware_pp"]))
        own.append(_own_gap_pp(p))
        rows.append([str(seed), f"`{command_of(d, USAGE)}`", f"{p['d2d_sigma']:g}", pct(d["clean_accuracy"]),
                     pp(p["drop_standard_pp"]), pct(p["noisy_accuracy_aware"]), pp(p["gap_aware_pp"]),
                     pp(_own_gap_pp(p))])
    stats = [mean_sd(v) for v in (drops, gaps, own)]
    rows.append([f"mean +- sample sd ({len(SEED_RUNS)} seeds)", "", "", "", f"{pp(stats[0][0])} +- {stats[0][1]:.2f}",
                 "", f"{pp(stats[1][0])} +- {stats[1][1]:.2f}", f"{pp(stats[2][0])} +- {stats[2][1]:.2f}"])
    longer = load(LONGER_RUN)
    lp = _headline_point(longer)
    main_run = load("imc")
    head, rule_pp = float(main_run["crossbar"]["d2d_sigma"]), float(main_run["drop_condition_pp"])
    held = [s for s, v in zip(seeds, drops, strict=True) if v >= rule_pp]
    where = (f"the headline point (d2d {head:g})" if all(abs(x - head) < 1e-12 for x in points) else
             f"d2d {', '.join(f'{x:g}' for x in points)} (**not all at the headline point, d2d {head:g}**)")
    spread = (f"At {where} the conventional drop is {', '.join(f'{v:.2f}' for v in drops)} pp for seeds "
              f"{', '.join(seeds)}: the rule's {rule_pp:g} pp condition holds for "
              f"{'every seed' if len(held) == len(seeds) else ('seeds ' + ', '.join(held) if held else 'no seed')}"
              f"; the variation-aware gap to the conventional clean accuracy stays between {min(gaps):.2f} and "
              f"{max(gaps):.2f} pp.")
    return "\n".join([
        "Generated from `benchmarks/results/" + "`, `benchmarks/results/".join(f"{n}.json" for n in SEED_RUNS)
        + f"` and `benchmarks/results/{LONGER_RUN}.json`, written by `{USAGE}` with the options in the command "
        "column (each file's own `command`). A seed "
        "re-seeds the train / validation split, the baseline training (its starting weights included) and the "
        "variation-aware training.", "",
        table(["seed", "command", "d2d sigma", "conventional clean", "conventional drop", "variation-aware",
               "gap vs conventional clean", "gap vs its own clean"], rows), "", spread, "",
        f"Longer fine-tuning (`{command_of(longer, USAGE)}`): at d2d {lp['d2d_sigma']:g}, "
        f"{longer['aware_training']['epochs']} epochs give "
        f"{_pm(lp['noisy_accuracy_aware'], lp['noisy_accuracy_aware_std'])}"
        f" (gap {pp(lp['gap_aware_pp'])} pp vs the conventional clean accuracy, {pp(_own_gap_pp(lp))} pp vs its own); "
        f"the conventional model drops {pp(lp['drop_standard_pp'])} pp there.",
    ])


def imc_aihwkit(load: Loader) -> str:
    d = load("imc")
    a = d.get("aihwkit_comparison")
    if not isinstance(a, dict):
        return produced_by("imc", command_of(d, USAGE)) + " This run has no aihwkit comparison."
    noisy = f"{a['prog_noise_sigma_rel_gmax']:g}"
    ours, theirs = a["crosslayer"][noisy], a["aihwkit"][noisy]
    s = a["settings"]
    return "\n".join([
        produced_by("imc", command_of(d, USAGE)) + f" aihwkit {a['aihwkit_version']}; layer {a['layer']}, "
        f"{a['inputs']:,} real inputs, {a['chips']} chips per tool; conductances "
        f"{s['g_min_uS']:g}-{s['g_max_uS']:g} uS, "
        f"{s['dac_bits']}-bit DAC / {s['adc_bits']}-bit ADC, ADC bound {s['adc_bound']:g}.", "",
        table(["", "crosslayer", "aihwkit"], [
            ["no programming noise: largest output difference (of the output RMS)",
             f"{a['no_noise_output_difference']['max_abs_rel']:.1e}", ""],
            [f"programming noise {100 * float(noisy):g} % of g_max: RMS output error (of the output RMS)",
             f"{ours['rms_error_rel']:.4f}", f"{theirs['rms_error_rel']:.4f}"],
            ["mean output error", f"{ours['mean_error']:.4f}", f"{theirs['mean_error']:.4f}"],
            ["chip-to-chip sd of the mean error", f"{ours['mean_error_chip_sd']:.4f}",
             f"{theirs['mean_error_chip_sd']:.4f}"],
        ]), "",
        f"RMS error ratio ours / aihwkit {a['noisy_rms_error_ratio_crosslayer_over_aihwkit']:.2f}; mean error expected "
        f"from the clip at 0 uS (closed form) {a['expected_mean_error_from_clip']:.4f}; the two mean errors differ by "
        f"{a['mean_error_difference_in_chip_sds']:.2f} standard errors of the chips.",
    ])

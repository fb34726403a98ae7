"""Generated blocks of docs/quant.md, docs/resilience.md, docs/approx.md and docs/security.md: quant.json,
resilience.json, approx.json, security.json (see benchmarks/render_docs.py)."""

from __future__ import annotations

from typing import Any

from _common import BASELINE_RECIPES
from _docgen import (
    Loader,
    command_of,
    machine_line,
    num,
    pct,
    pp,
    produced_by,
    ratio,
    recipe,
    recipe_difference,
    spread_pp,
    table,
)

MODELS = {"lenet5": "LeNet-5", "lenet300": "LeNet-300-100"}
USAGE = {
    "quant": "python benchmarks/quant.py",
    "resilience": ".venv/bin/python benchmarks/resilience.py",
    "approx": ".venv/bin/python benchmarks/approx.py",
    "security": ".venv/bin/python benchmarks/security.py",
}


def quant(load: Loader) -> str:
    d = load("quant")
    models = [m for m in MODELS if isinstance(d.get(m), dict)]
    per = [d[m] for m in models]

    def row(label: str, fn: Any) -> list[str]:
        return [label, *(fn(r) for r in per)]

    def loss(r: dict[str, Any], key: str) -> str:
        return spread_pp(r[f"{key}_spread"])

    def q(prefix: str) -> Any:
        return lambda r: (f"{pct(r[prefix + '_accuracy'])} ({loss(r, prefix + '_accuracy_loss_pp')}), "
                          f"{ratio(r[prefix + '_compression_ratio'], 1)}")

    def peer(r: dict[str, Any]) -> str:
        p = r["peer_torch_ao_int8"]
        return f"{pct(p['accuracy'])} ({loss(p, 'accuracy_loss_pp')})"

    def baseline(m: str) -> str:
        b = d[m]["baseline_training"]
        return (f"{recipe(b)}, seed {b.get('seed', '?')}; against `BASELINE_RECIPES[\"{m}\"]`: "
                f"{recipe_difference(b, BASELINE_RECIPES[m])}")

    rows = [
        ["baseline", *(baseline(m) for m in models)],
        row("baseline test accuracy", lambda r: pct(r["baseline_accuracy"])),
        row("PTQ 8/8: accuracy (loss), compression", q("ptq8")),
        row("QAT 4/4", q("qat4")),
        row("ternary weights", q("ternary")),
        row("torch.ao FX int8 (peer)", peer),
        row("PTQ bits kept by the sweep (0.1 pp, validation)",
            lambda r: str(r.get("sweep_lossless_bits_ptq", "not run"))),
        row("model wall time", lambda r: f"{r['seconds']:.0f} s"),
    ]
    split = d.get("data", {})
    out = [produced_by("quant", command_of(d, USAGE["quant"])) + f" {machine_line(d)}; MNIST "
           f"{num(split.get('train', 0))} train / {num(split.get('val', 0))} val / {num(split.get('test', 0))} test.",
           "", table(["", *(MODELS[m] for m in models)], rows), ""]
    if models:
        out.append(f"Accuracies are means over seeds {', '.join(map(str, d[models[0]]['seeds']))} (calibration "
                   "subset, fine-tuning order), losses mean +- standard deviation (per seed); compression is the "
                   "same for every seed. `docs/protocol.md` compares every file's baseline.")
    sweeps = [m for m in models if isinstance(d[m].get("sweep_val"), dict)]
    if sweeps:
        bits = sorted({int(b) for m in sweeps for b in d[m]["sweep_val"]}, reverse=True)
        out += ["", "Whole-network PTQ bit-width sweep, validation accuracy (reference = the float model):", "",
                table(["model", "float", *(f"{b} bits" for b in bits)],
                      [[MODELS[m], pct(d[m]["sweep_val_reference_accuracy"]),
                        *(pct(d[m]["sweep_val"][str(b)]) if str(b) in d[m]["sweep_val"] else "" for b in bits)]
                       for m in sweeps])]
    for m in models:
        st = d[m].get("quantize_stage")
        if isinstance(st, dict):
            layers = ", ".join(f"{k} {v}" for k, v in st.get("sweep_per_layer_bits", {}).items())
            out += ["", f"`quantize` flow stage ({MODELS[m]}, demo settings): {st['seconds']:.0f} s, test accuracy "
                    f"{pct(st['test_accuracy'])}, compression {ratio(st['compression_ratio'], 1)}; per-layer bits "
                    f"from its sweep: {layers}."]
    return "\n".join(out)


def resilience(load: Loader) -> str:
    d = load("resilience")
    out = [produced_by("resilience", command_of(d, USAGE["resilience"])) + " LeNet-5 on MNIST. " +
           _resilience_lines(d)]
    r = d.get("resnet20")
    if isinstance(r, dict) and "equal" in r:
        out += ["", f"ResNet-20 on Fashion-MNIST (`{r.get('command', '?')}`). " + _resilience_lines(r)]
    return "\n".join(out).rstrip("\n")


def _resilience_lines(d: dict[str, Any]) -> str:
    """One model's campaigns: the set-up line, then per campaign its headline and per-layer table."""
    out = [f"PyTorchFI {d.get('pytorchfi_version', '?')}; {machine_line(d)}; {num(d['test_images'])} test images, "
           f"clean accuracy {pct(d['clean_accuracy'])}; {d['threads']} torch thread(s) on both sides, "
           f"{d['rounds']} interleaved rounds.", ""]
    for name, what in (("equal", "the same number of faults in every layer"),
                       ("size", "faults in proportion to each layer's weights")):
        c = d[name]
        rows = [[layer, num(v["faults"]), f"{v['pytorchfi_seconds']:.1f}",
                 f"{v['ours_fault_seconds'] + v['ours_clean_pass_share_seconds']:.2f}", ratio(v["speedup"], 1),
                 ratio(v["speedup_excluding_clean_pass"], 0)] for layer, v in c["per_layer"].items()]
        rows.append(["all", num(sum(c["faults_per_layer"].values())), f"{c['pytorchfi_seconds']:.1f}",
                     f"{c['ours_seconds']:.2f}", ratio(c["speedup"], 1), ""])
        out += [f"`{name}` campaign ({what}): overall speed-up {ratio(c['speedup'], 1)} (median of the rounds "
                f"{ratio(c['speedup_median_of_rounds'], 1)}), {c['mismatched_faults']} faults whose correct count "
                f"differs between the tools; peak memory ours {c['ours_peak_rss_mb']:.0f} MB, PyTorchFI "
                f"{c['pytorchfi_peak_rss_mb']:.0f} MB.", "",
                table(["layer", "faults", "PyTorchFI s", "ours s", "speed-up", "speed-up without the clean pass"],
                      rows), ""]
    o = d.get("ours_only_campaign")
    if isinstance(o, dict):
        out.append(f"Ours alone on a full statistical campaign: {num(o['faults'])} faults in {o['seconds']:.1f} s "
                   f"({o['injections_per_s']:.1f} per second, peak {o['peak_rss_mb']:.0f} MB).")
    return "\n".join(out).rstrip("\n")


def zoo_speed_lines(speed: dict[str, Any]) -> list[str]:
    """The emulation speed of the models timed beside LeNet-5: one column per model."""
    names = [n for n, e in speed.items() if n != "lenet5" and isinstance(e, dict) and "variants" in e]
    if not names:
        return []
    variants = list(speed[names[0]]["variants"])
    rows = [[f"`{v}`", *(ratio(speed[n]["variants"][v]["slowdown_vs_fake_quant"]) if v in speed[n]["variants"]
                         else "-" for n in names)] for v in variants]
    rows.append(["fake-quant images / s", *(num(speed[n]["variants"][variants[0]]["images_per_s"]) for n in names)])
    rows.append(["peak MiB (slowest)", *(f"{speed[n]['variants'][speed[n]['slowest_multiplier']]['peak_rss_mb']:.0f}"
                                         for n in names)])
    w = speed[names[0]].get("weights", {})
    return [f"The same timing on {', '.join(names)} (every multiplier in all their approximable layers; "
            f"{', '.join(num(speed[n]['images']) + ' images' for n in names)}, {speed[names[0]]['rounds']} "
            f"interleaved rounds; weights from {w.get('epochs', '?')} epoch on {num(w.get('train_images', 0))} "
            f"{w.get('dataset', '?')} images, for speed only), time / fake-quant:", "",
            table(["variant", *names], rows), ""]


def approx(load: Loader) -> str:
    d = load("approx")
    s = d["settings"]
    t = d["training"]
    out = [produced_by("approx", command_of(d, USAGE["approx"])) + f" Settings recorded: confidence "
           f"{s['confidence']}, {s['rounds']} timing rounds, {num(s['timing_images'])} timing images, "
           f"{s['threads']} threads; {machine_line(d)}.", "",
           f"LeNet-5 baseline ({recipe(t)}, seed {t.get('seed', '?')}): float test accuracy "
           f"{pct(d['float_test_accuracy'])}; exact int8 {pct(d['exact_int8_test_accuracy'])} on "
           f"{num(d['sweep_test_images'])} test images; bit-exact against the integer reference: "
           f"{'yes' if d['exact_bitexact'] else 'no'} ({num(d['bitexact_images'])} images), every multiplier: "
           f"{'yes' if d.get('all_bitexact') else 'no'} ({num(d.get('every_multiplier_bitexact_images', 0))} images).",
           ""]
    sp = d["speed"]["lenet5"]
    rows = [[f"`{n}`", num(v["images_per_s"]), ratio(v["slowdown_vs_fake_quant"]), f"{v['peak_rss_mb']:.0f}",
             f"{v['working_mb']:.0f}"] for n, v in sp["variants"].items()]
    out += [f"Speed ({num(sp['images'])} images, {sp['threads']} threads, {sp['rounds']} interleaved rounds, "
            f"medians; raw rounds in the file): int8 kernel {ratio(sp['int8_kernel_speedup_vs_fake_quant'])} "
            f"faster than the fake-quant model; slowest emulation `{sp['slowest_multiplier']}`, "
            f"{ratio(sp['max_slowdown_vs_fake_quant'])} slower."
            + (f" Re-measured alone by `{sp['command']}` after the kernels changed; the accuracy and bit-exactness "
               "figures above are from the full run (the kernel tests check every multiplier bit-exact)."
               if sp.get("command") else ""), "",
            table(["model", "images / s", "time / fake-quant", "peak MiB", "working MiB"], rows), ""]
    out += zoo_speed_lines(d["speed"])
    mrows = [[f"`{m['name']}`", f"{m['med']:g}", f"{m['mred']:.4f}", f"{m['wce']:g}", f"{m['bias']:g}",
              f"{m['relative_power']:.3f}", pct(m["accuracy"])] for m in d["multipliers"]]
    out += ["Every multiplier in every layer (test accuracy):", "",
            table(["multiplier", "MED", "MRED", "WCE", "bias", "relative power", "accuracy"], mrows), ""]
    out += approx_selection_lines(d)
    return "\n".join(out)


def approx_selection_lines(d: dict[str, Any]) -> list[str]:
    """The greedy selection: the headline over the calibration seeds, then one row per seed."""
    runs = d["selection_runs"]
    loss, saving = d["selected_accuracy_loss"], d["selected_power_saving_spread"]
    rows = [[str(r["seed"]), ", ".join(f"{k} `{v}`" for k, v in r["assignment"].items()) or "all exact",
             pct(r["power_saving"], 1), pp(r["val_loss_pp"]), pp(r["val_loss_bound_pp"]),
             pct(r["exact_int8_test_accuracy"]), pct(r["selected_test_accuracy"]),
             f"{pp(r['test_loss_pp'])} (SE {r['test_loss_se_pp']:.2f})"] for r in runs]
    return [f"Selection at {d['budget_pp']} pp ({d['selection_on']}; rule: {d['selection_rule']}), once per "
            f"calibration seed ({', '.join(str(s) for s in d['selection_seeds'])}): test loss "
            f"{pp(loss['mean'])} ± {loss['std']:.2f} pp (mean ± sd; range {pp(loss['min'])} to "
            f"{pp(loss['max'])}) on the {num(d['final_test_images'])} test images, never seen by the selection; "
            f"multiplier power saved (MAC-weighted) {pct(saving['mean'], 1)} ± {100 * saving['std']:.1f} pp.", "",
            table(["seed", "assignment", "power saved", "val loss pp", "val bound pp", "exact int8 test",
                   "selected test", "test loss pp"], rows)]


ATTACKS = (("fgsm_eps0.1", "FGSM", "0.1"), ("fgsm_eps0.3", "FGSM", "0.3"),
           ("pgd40_eps0.1", "PGD-40", "0.1"), ("pgd40_eps0.3", "PGD-40", "0.3"))


def security(load: Loader) -> str:
    d = load("security")
    rows, gaps, ratios, art = [], [], [], []
    for key, name, eps in ATTACKS:
        a = d.get(key)
        if not isinstance(a, dict):
            continue
        gaps.append(float(a["max_success_gap_pp"]))
        ratios.append(float(a["time_ratio_ours_over_torchattacks"]))
        art.append(float(a["art_seconds"]) / float(a["ours_seconds"]))
        rows.append([name, eps, pct(a["ours_success"]), pct(a["torchattacks_success"]), pct(a["art_success"]),
                     f"{a['ours_seconds']:.3f}", f"{a['torchattacks_seconds']:.3f}", f"{a['art_seconds']:.3f}",
                     f"{a['time_ratio_ours_over_torchattacks']:.2f}"])
    st = d.get("settings", {})
    out = [produced_by("security", command_of(d, USAGE["security"])) + f" {machine_line(d)}; "
           f"{st.get('total_seconds', 0):.0f} s in all. Model: {d['model']}, test accuracy {pct(d['test_accuracy'])}; "
           f"clean accuracy {pct(d['clean_accuracy'])} on the {num(d['n_images'])} attacked images; PGD step "
           f"{d['pgd_alpha']}; repetitions FGSM {d['repeats']['fgsm']}, PGD-40 {d['repeats']['pgd40']} (medians).",
           "", table(["attack", "eps", "success ours", "torchattacks", "ART", "ours s", "torchattacks s", "ART s",
                      "ours / torchattacks"], rows), ""]
    if rows:
        out.append(f"- Largest success-rate gap to a peer: {max(gaps):.2f} pp. Time ratio ours / torchattacks "
                   f"(ratio of medians): {min(ratios):.2f}-{max(ratios):.2f}; ART / ours: "
                   f"{min(art):.2f}-{max(art):.2f}.")
    at = d.get("adv_training")
    if isinstance(at, dict):
        out.append(f"- PGD adversarial training ({at['epochs']} epochs, PGD-{at['train_pgd_steps']} at eps "
                   f"{at['eps']}, "
                   f"from {at['start']}, {num(at['train_images'])} training images, {at['seconds']:.0f} s): robust "
                   f"accuracy {pct(d['adv_trained_robust_accuracy'])} ({at['eval']}), clean accuracy "
                   f"{pct(d['adv_trained_clean_accuracy'])}.")
    if "badnets_asr_before" in d:
        out.append(f"- BadNets ({d['badnets_setup']}; {num(d['badnets_poisoned_images'])} poisoned images): clean "
                   f"accuracy {pct(d['badnets_clean_accuracy_before'])}, attack success "
                   f"{pct(d['badnets_asr_before'])} before; fine-pruning ({d['fine_pruning_channels_pruned']} of "
                   f"{d['fine_pruning_channels']} channels): attack success {pct(d['badnets_asr_after'])} after, "
                   f"clean accuracy {pct(d['badnets_clean_accuracy_after'])}, "
                   f"loss {pp(d['badnets_clean_loss_pp'])} pp.")
    return "\n".join(out)

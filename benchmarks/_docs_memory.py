"""Generated block of docs/memory.md: the voltage-scaled weight memory and the curable multiplier
(``benchmarks/results/memories.json``, written by benchmarks/memories.py; see benchmarks/render_docs.py)."""

from __future__ import annotations

from typing import Any

from _docgen import Loader, command_of, machine_line, mean_sd, pct, produced_by, recipe, table

USAGE = ".venv/bin/python benchmarks/memories.py"


def _chips(s: dict[str, Any]) -> str:
    """Test accuracy over chips: '97.74 % (sd 0.26 pp, 97.40 % to 98.09 %)'."""
    return f"{pct(s['mean'])} (sd {100 * s['std']:.2f} pp, {pct(s['min'])} to {pct(s['max'])})"


def _volts(values: list[float]) -> str:
    return " / ".join(f"{v:g} V" for v in values)


def _curve_row(name: str, c: dict[str, Any]) -> list[str]:
    conv = c["summary"]["conventional"]
    row = [f"`{name}`", f"{c['conventional_voltage']:g} V", _chips(conv["test"]),
           pct(conv["read_energy_saving"], 1), pct(conv["accelerator_energy_saving"], 1)]
    ad = c["summary"].get("adapted")
    if not ad:
        return [*row, "not trained (the conventional model reaches the curve's lowest measured voltage)", "", ""]
    over = ad["test_mean_over_seeds"]
    per_seed = c["adapted"]["per_seed"]
    others = [r["test_on_other_chips"]["mean"] for r in per_seed.values() if r.get("test_on_other_chips")]
    other_txt = pct(mean_sd(others)[0]) if others else "not measured"
    return [*row, f"{_volts(ad['voltage_per_seed'])} (seeds {', '.join(per_seed)})",
            f"{pct(over['mean'])} ± {100 * over['std']:.2f} pp over seeds; read energy saved "
            f"{pct(mean_sd(ad['read_energy_saving_per_seed'])[0], 1)}, accelerator "
            f"{pct(mean_sd(ad['accelerator_energy_saving_per_seed'])[0], 1)}", other_txt]


def _control_line(name: str, c: dict[str, Any]) -> str | None:
    ctl = c.get("control")
    if not ctl:
        return None
    parts = []
    for seed, r in ctl["per_seed"].items():
        tests = ", ".join(f"{v} V {pct(a)}" for v, a in r["test"].items())
        parts.append(f"seed {seed}: reaches {r['voltage_vs_baseline_reference']:g} V, test {tests}")
    return (f"- Control on `{name}` (the same fine-tuning without faults, {ctl['epochs']} epoch(s) at lr "
            f"{ctl['lr']:g}, read through the chips like the conventional model; a seed whose fine-tuning does not "
            "beat the starting weights on validation keeps them, as MAT does): " + "; ".join(parts) + ".")


def memories(load: Loader) -> str:
    d = load("memories")
    out = [produced_by("memories", command_of(d, USAGE)) + f" {machine_line(d)}; {d['seconds'] / 60:.0f} min, "
           f"peak {d['peak_rss_mb']:,.0f} MiB.", ""]
    for model, m in d["models"].items():
        ref = m["baseline_recipe"]
        out += [f"{model} (baseline {recipe(ref)}, seed 0; {m['train_images']:,} training, "
                f"{m['val_images']:,} validation, {m['test_images']:,} test images): float test accuracy "
                f"{pct(m['float_test_accuracy'])}; its int8 weights ({m['memory_bits']:,} bits of weight memory, "
                f"{m['word_bits']}-bit words) fault-free: validation {pct(m['fault_free_val_accuracy'])}, test "
                f"{pct(m['fault_free_test_accuracy'])}. Rule: the lowest voltage whose mean validation accuracy "
                f"over the chips is within {d['budget_pp']:g} pp of the fault-free validation accuracy; test "
                "accuracy is measured at the voltage reached, mean over the chips.", ""]
        rows = [_curve_row(name, c) for name, c in m["curves"].items()]
        out += [table(["BER curve", "conventional voltage", "conventional test (over chips)",
                       "read energy saved", "accelerator energy saved", "memory-adapted voltage per seed",
                       "memory-adapted test", "adapted model on the other chips"], rows), ""]
        for name, c in m["curves"].items():
            ad = c.get("adapted")
            if ad:
                sel = ", ".join(f"{k} {pct(v)}" for k, v in ad["lr_selection_val"].items())
                out.append(f"- MAT on `{name}`: learning rate {ad['lr']:g} chosen on validation at "
                           f"{ad['lr_selection_voltage']:g} V ({sel}); {ad['epochs']} epoch(s), "
                           f"{ad['optimizer']}, {ad['schedule']}, the baseline's augmentation.")
            line = _control_line(name, c)
            if line:
                out.append(line)
        out.append("")
    cu = d.get("cured")
    if cu:
        acc = cu["test_accuracy"]
        out.append(f"Curable multiplier `{cu['design']}` on the {cu['model']} ({cu['test_images']:,} test images): "
                   f"exact {pct(acc['exact'])}, cured {pct(acc['cured'])}, uncured {pct(acc['uncured'])}; cured "
                   f"logits equal the exact ones: {'yes' if cu['cured_equals_exact_logits'] else 'no'}; modelled "
                   f"latency {cu['relative_latency']:.2f}x, area {cu['relative_area']:.2f}x, power "
                   f"{cu['relative_power']:.2f}x of the exact multiplier ({pct(cu['modelled_power_saving'], 1)} "
                   "saved, modelled, not synthesised).")
    return "\n".join(out).rstrip()

"""Renderers of the zoo blocks (docs/models.md): benchmarks/results/zoo_compress.json and zoo.json."""

from __future__ import annotations

from typing import Any

from _docgen import Loader, machine_line, num, over_seeds_line, pct, pp, produced_by, ratio, recipe, spread_pp, table

# Per stage, the metrics the zoo table quotes: (metric key, label, format).
STAGE_METRICS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "baseline": (("test_accuracy", "test acc.", "pct"), ("val_accuracy", "val acc.", "pct")),
    "evaluate": (("test_accuracy", "test acc.", "pct"), ("params", "params", "num")),
    "prune": (("sparsity", "sparsity", "pct"), ("accuracy_loss_pp", "test loss", "pp"),
              ("val_accuracy_loss_pp", "val loss", "pp")),
    "quantize": (("weight_bits", "weight bits", "num"), ("act_bits", "act. bits", "num"),
                 ("accuracy_loss_vs_baseline_pp", "test loss vs baseline", "pp"),
                 ("compression_ratio", "compression", "ratio")),
    "explore": (("points", "points", "num"), ("sparsity", "best sparsity", "pct"),
                ("weight_bits", "bits", "num"), ("test_accuracy", "test acc.", "pct")),
    "encode": (("packed_bytes", "packed bytes", "num"), ("file_compression_ratio", "vs dense fp32", "ratio"),
               ("graph_kind", "graph", "str")),
    "export": (("current_onnx_top1_agreement", "int8 ONNX agreement", "pct"),
               ("current_onnx_accuracy", "ONNX test acc.", "pct"), ("best_variant", "fastest", "str")),
    "resilience": (("injections", "bit flips", "num"), ("most_sensitive_layer", "most sensitive", "str"),
                   ("most_resilient_layer", "most resilient", "str")),
    "approximate": (("approximated_layers", "approximated layers", "num"),
                    ("multiplier_power_saving", "multiplier power saving", "pct"),
                    ("accuracy_loss_pp", "test loss", "pp")),
    "hardware": (("best_dataflow", "dataflow", "str"), ("energy_ratio_vs_baseline", "energy vs baseline", "ratio"),
                 ("latency_ms", "latency ms", "f3")),
    "memory": (("conventional_voltage", "lowest voltage V", "f3"),
               ("conventional_accelerator_energy_saving", "accelerator energy saving", "pct")),
    "imc": (("noisy_accuracy_standard", "noisy acc.", "pct"), ("noisy_accuracy_aware", "aware acc.", "pct"),
            ("imc_tiles", "tiles", "num"), ("imc_vs_digital_energy", "energy vs digital", "ratio")),
    "security": (("robust_accuracy_baseline_eps0.1", "PGD eps 0.1 baseline", "pct"),
                 ("robust_accuracy_pruned_eps0.1", "pruned", "pct"),
                 ("robust_accuracy_quantized_eps0.1", "quantized", "pct")),
    "detect": (("stp_recall_minus_full_frame_pp", "STP - full frame recall", "pp"),
               ("stp_macs_vs_full_frame", "STP MACs vs full frame", "f3")),
    "search": (("trials", "trials", "num"), ("energy_ratio_vs_baseline", "energy vs baseline", "ratio"),
               ("test_loss_pp", "test loss", "pp")),
}


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return pct(value)
    if kind == "pp":
        return f"{pp(value)} pp"
    if kind == "ratio":
        return ratio(value, 2)
    if kind == "num":
        return num(value)
    if kind == "f3":
        return f"{value:.3f}"
    return str(value)


def _images(n: Any) -> str:
    return "the whole training split" if n in (None, 0, "all") else f"{num(n)} training images"


def zoo_compress(load: Loader) -> str:
    d = load("zoo_compress")
    p = d["protocol"]
    out = [f"Generated from `benchmarks/results/zoo_compress.json`, written by the phases of "
           f"`python benchmarks/zoo_compress.py` (baseline, unstructured with `--seed` "
           f"{' / '.join(map(str, p['seeds']))}, structured with `--seed` "
           f"{' / '.join(map(str, p.get('structured_seeds', p['seeds'])))}, probe, timing, report). ResNet-20 on "
           f"Fashion-MNIST 54,000 / 6,000 / 10,000; unstructured fine-tuning on the first "
           f"{num(p['fine_tune_images'])} training images; the seeds vary the fine-tuning.", ""]
    b = d.get("baseline")
    if b:
        out.append(f"- Baseline ({recipe(p['recipe'])}): test {pct(b['test_accuracy'])}, validation "
                   f"{pct(b['val_accuracy'])}.")
    u = d.get("unstructured_int8")
    if u:
        out.append(f"- Unstructured {pct(p['sparsity'])} of the weights + 8-bit weights and activations: test "
                   f"loss {spread_pp(u['test_loss_pp'])}; int8 ONNX top-1 agreement with PyTorch "
                   f"{pct(u['int8_top1_agreement']['min'])} (lowest seed; QDQ graph run as written "
                   f"{pct(u['int8_top1_agreement_qdq_as_written']['min'])}); packed file "
                   f"{num(u['packed_bytes']['mean'])} B vs {num(u['dense_fp32_state_bytes'])} B of dense fp32 "
                   f"({ratio(u['packed_vs_dense_fp32']['mean'], 1)}).")
    s = d.get("structured")
    if s:
        out.append(f"- Structured: {pct(s['amount'])} of every prunable channel group removed (channel counts "
                   f"multiples of {p.get('round_to', 1)}), {num(s['params'])} of {num(s['baseline_params'])} "
                   f"parameters; fine-tuned {p['structured_finetune']['epochs']} epochs (SGD lr "
                   f"{p['structured_finetune']['lr']:g}) on {_images(p.get('structured_finetune_images'))}; test loss "
                   f"{spread_pp(s['test_loss_pp'])}.")
    e = d.get("structured_earlier")
    if e:
        out.append(f"- First structured recipe ({e['finetune']['epochs']} epochs on {num(e['images'])} images, "
                   f"seeds {', '.join(map(str, e['seeds']))}) at {pct(e['amount'])}: validation loss "
                   f"{spread_pp(e['val_loss_pp'])}, test loss {spread_pp(e['test_loss_pp'])}; replaced because it "
                   f"{e['why_replaced']}.")
    t = d.get("structured_timing")
    if t:
        img = t["throughput_img_s_median"]
        out.append(f"- ONNX Runtime fp32, batch {t['batch']}, {t['threads']} threads, {t['rounds']} interleaved "
                   f"rounds: {ratio(t['speedup'], 2)} faster ({num(img['pruned'])} vs {num(img['dense'])} img/s, "
                   f"medians); peak memory {t['peak_rss_mb']['pruned']:.0f} vs {t['peak_rss_mb']['dense']:.0f} MB; "
                   f"ONNX file {num(t['onnx_fp32_bytes']['pruned'])} vs {num(t['onnx_fp32_bytes']['dense'])} B.")
    pr = d.get("rounding_probe")
    if pr:
        out += ["", "Why channel counts are rounded (shapes only, fp32 ONNX Runtime speed-up over the unpruned "
                    "model, batch 256, 5 interleaved rounds):", "",
                "| channels removed | no rounding: widths, speed-up | multiples of 8: widths, speed-up |",
                "|---|---|---|"]
        by = {(r["round_to"], r["amount"]): r for r in pr["rows"]}
        for a in sorted({r["amount"] for r in pr["rows"]}):
            cells = []
            for rt in sorted({r["round_to"] for r in pr["rows"]}):
                r = by.get((rt, a))
                cells.append(f"{'/'.join(map(str, r['conv_widths']))}, {ratio(r['speedup'], 2)}" if r else "n/a")
            out.append(f"| {pct(a)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def zoo(load: Loader) -> str:
    d = load("zoo")
    out = [f"Generated from `benchmarks/results/zoo.json`, written by `python benchmarks/zoo.py`: the default flow "
           f"(every stage) from each model's cached baseline, test split measured on its first "
           f"{num(d['protocol']['test_limit'])} images, lighter stage settings as listed in the script; "
           f"{d.get('total_seconds', 0) / 60:.0f} min for the three flows.", ""]
    for section in ("resnet20", "mobilenetv2", "lenet5"):
        r = d.get(section)
        if not isinstance(r, dict):
            continue
        out += [f"#### {r['model']} on {r['dataset']}", "",
                f"`{r['command']}`: exit {r['exit_code']}, {r['seconds'] / 60:.1f} min, "
                f"{len(r['stages_run'])} stages; baseline: {recipe(r['recipe'])}, training seed "
                f"{r.get('baseline_seed', 0)}.", "", "| stage | s | figures |", "|---|---|---|"]
        for stage, spec in STAGE_METRICS.items():
            st = r["stages"].get(stage)
            if st is None:
                continue
            m = st["metrics"]
            figs = "; ".join(f"{label} {_fmt(m.get(key), kind)}" for key, label, kind in spec if key in m)
            out.append(f"| {stage} | {st['seconds']:.0f} | {figs} |")
        lay = r["layers"]
        cols = lay["columns"]
        out += ["", "Per layer (a `-`: the stage's per-layer table does not list the layer; it left it as it is):",
                "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in lay["rows"]:
            out.append("| " + " | ".join(_cell(row.get(c, "")) for c in cols) + " |")
        out.append("")
    return "\n".join(out).rstrip()


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def deploy_resnet20(load: Loader) -> str:
    """The deployment table of ResNet-20 (benchmarks/deploy.py --model resnet20)."""
    from _docs_compression import _variants

    d = load("deploy_resnet20")
    out = [produced_by("deploy_resnet20", d["command"]) + f" {machine_line(d)}; whole run {d['seconds']:.0f} s. "
           f"Timing: {d['timing']}.", "",
           f"Baseline: {pct(d['baseline_test_accuracy'])} test, {pct(d['baseline_val_accuracy'])} validation "
           f"({recipe(d['recipe'])}). Budget {pp(d['budget_pp'])} pp, target {ratio(d['target_ratio'])} fp32 "
           f"PyTorch eager at batch 256. Rule: {d['selection_rule']}.", ""]
    for tag, s in d["structured"].items():
        out.append(f"- {tag} (channel counts multiples of {s['round_to']}; conv widths "
                   f"{', '.join(map(str, s['conv_widths']))}):"
                   f" {num(s['params'])} of {num(s['params_baseline'])} weights, "
                   f"{ratio(s['macs_baseline'] / s['macs'], 2)} fewer MACs.")
    out.append(f"- Eligible on validation: {', '.join(f'`{n}`' for n in d['eligible_on_validation']) or 'none'}; "
               f"fastest structured variant within budget on validation: "
               f"`{d['best_structured_within_budget']}`." if d["best_structured_within_budget"] else
               "- No structured variant is within budget on validation.")
    ft = d.get("structured_finetune")
    if isinstance(ft, dict):
        out.append(f"- Structured fine-tuning: {ft.get('epochs')} epochs, SGD lr {ft.get('lr', '?')}, batch "
                   f"{ft.get('batch_size', '?')}, on {num(ft.get('images', 0))} training images, seed "
                   f"{ft.get('seed')}.")
    seeds = d.get("best_variant_over_seeds")
    if isinstance(seeds, dict):
        out.append(over_seeds_line(seeds))
    for e in d.get("earlier_runs", []):
        eft, rows = e.get("structured_finetune") or {}, e.get("variants", {})
        struct = "; ".join(f"`{n}` {ratio(v['throughput_ratio_vs_fp32_pytorch'])} at {pp(v['val_loss_pp'])} pp "
                           "validation" for n, v in rows.items() if "structured" in n and "ONNX Runtime" in n
                           and "QDQ" not in n)
        out.append(f"- Earlier run, structured fine-tuning {eft.get('epochs')} epochs on "
                   f"{num(eft.get('images', 0))} images (seed {eft.get('seed')}): chose `{e.get('best_variant')}` "
                   f"at {ratio(e.get('best_throughput_ratio') or 0)}; {struct}.")
    out += ["", _variants(d)]
    return "\n".join(out)


ZOO_BASELINES = (("ResNet-20", "fashion_resnet20"), ("MobileNetV2 width 0.5", "fashion_mobilenetv2"))


def zoo_baselines(load: Loader) -> str:
    """The built-in models' baselines on Fashion-MNIST: each pilot's grid and every recorded training."""
    d = load("baseline")
    out = ["Generated from `benchmarks/results/baseline.json`, written by `python benchmarks/baseline.py --pilot "
           "MODEL` (the learning rate, on the validation split) and `--zoo MODEL [--seed S]` (the training); "
           f"{machine_line(d)}.", ""]
    rows = []
    for label, key in ZOO_BASELINES:
        pilot = d.get(f"pilot_{key}")
        if pilot:
            grid = ", ".join(f"{g['lr']:g}: {pct(g['best_val_accuracy'])}" for g in pilot["grid"])
            out.append(f"- {label} pilot ({num(pilot['train_images'])} training images, {pilot['epochs']} epochs, "
                       f"validation accuracy per learning rate): {grid}; chosen {pilot['chosen']['lr']:g}. Rule: "
                       f"{pilot['rule']}.")
        for rec_key in sorted(k for k in d if k == key or k.startswith(f"{key}_seed")):
            r = d[rec_key]
            last = ", ".join(pct(h["val_accuracy"]) for h in r["history"][-3:])
            rows.append([label, str(r.get("seed", 0)), recipe(r["recipe"]), pct(r["test_accuracy"]),
                         pct(r["val_accuracy"]), str(r["best_epoch"]), last, num(r["params"]),
                         f"{r['train_seconds'] / 60:.0f}"])
    out += ["", table(["model", "seed", "recipe", "test", "validation", "best epoch", "validation, last 3 epochs",
                       "weights", "train min"], rows)]
    return "\n".join(out)

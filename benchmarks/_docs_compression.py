"""Generated blocks of docs/benchmarks.md and docs/prune.md: compression.json, deploy.json, prune_seeds.json,
prune_to95.json (see benchmarks/render_docs.py)."""

from __future__ import annotations

import itertools
from typing import Any

from _docgen import (
    Loader,
    command_of,
    machine_line,
    mean_sd,
    num,
    over_seeds_line,
    pct,
    pp,
    produced_by,
    ratio,
    recipe,
    table,
)

MODELS = {"lenet5": "LeNet-5", "lenet300": "LeNet-300-100"}
COMPRESSION_USAGE = "python benchmarks/compression.py"
DEPLOY_USAGE = "python benchmarks/deploy.py"
# The usage lines of benchmarks/prune_seeds.py's docstring for each of its results files.
PRUNE_SEEDS_USAGE = {
    "prune_seeds": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_seeds.py",
    "prune_to95": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_seeds.py --seeds 0 "
                  "--targets 0.5,0.7,0.8,0.85,0.88,0.9,0.92,0.94,0.95 --out prune_to95",
}


def _models(data: dict[str, Any]) -> list[str]:
    return [m for m in MODELS if isinstance(data.get(m), dict)]


def _split(data: dict[str, Any]) -> str:
    d = data.get("data")
    if not isinstance(d, dict):
        return "split not recorded"
    return f"MNIST {num(d['train'])} train / {num(d['val'])} val / {num(d['test'])} test"


def point_rule_stop(steps: list[dict[str, Any]], budget_pp: float) -> tuple[float, float] | None:
    """(sparsity kept, sparsity of the first step over budget) under the point rule (observed validation loss
    within budget, ``stop_confidence = 0.5``), or None when every step stays within the budget."""
    for prev, step in itertools.pairwise(steps):
        if float(step["val_loss_pp"]) > budget_pp + 1e-9:
            return float(prev["sparsity"]), float(step["sparsity"])
    return None


def compression(load: Loader) -> str:
    data = load("compression")
    models = _models(data)
    cols = [MODELS[m] for m in models]
    per = [data[m] for m in models]

    def row(label: str, fn: Any) -> list[str]:
        return [label, *(fn(r) for r in per)]

    def quant(prefix: str) -> Any:
        return lambda r: f"{pp(r[prefix + '_accuracy_loss_pp'])} pp, {ratio(r[prefix + '_compression_ratio'], 1)}"

    rows = [
        row("baseline recipe", lambda r: recipe(r["baseline_training"])),
        row("baseline test accuracy", lambda r: pct(r["baseline_accuracy"])),
        row("pruning: kept sparsity", lambda r: pct(r["pruned_fraction"], 0)),
        row("pruning: test loss (validation loss)",
            lambda r: f"{pp(r['pruned_accuracy_loss_pp'])} pp ({pp(r['pruned_val_loss_pp'])} pp)"),
        row("PTQ 8/8: test loss, compression", quant("ptq8")),
        row("QAT 4/4: test loss, compression", quant("qat4")),
        row("ternary weights: test loss, compression", quant("ternary")),
        row("joint (headline variant): test loss",
            lambda r: f"{r['joint_variant']}: {pp(r['joint_accuracy_loss_pp'])} pp"),
        row("joint: packed file, compression",
            lambda r: f"{num(r['joint_packed_bytes'])} B, {ratio(r['joint_compression_ratio'], 1)}"),
        row("joint: counted compression", lambda r: ratio(r["joint_compression_ratio_counted"], 1)),
        row("other joint variant (for reading)", lambda r: _other_joint(r)),
        row("compression wall time", lambda r: f"{r['seconds']:.0f} s"),
    ]
    out = [produced_by("compression", command_of(data, COMPRESSION_USAGE)) + f" {_split(data)}; "
           f"validation budget {data.get('budget_pp', '?')} pp; {data.get('threads', '?')} thread(s); "
           f"{machine_line(data)}.", "", table(["", *cols], rows), ""]
    for m in models:
        r = data[m]
        stop = point_rule_stop(r["prune_steps"], float(r["prune_schedule"]["budget_pp"]))
        conf = r["prune_schedule"].get("stop_confidence")
        if stop is not None:
            out.append(f"- {MODELS[m]}: the schedule ran with `stop_confidence = {conf}`; under the point rule "
                       f"(`stop_confidence = 0.5`, observed validation loss within the budget) it would have "
                       f"stopped at the {pct(stop[1], 0)} step and kept {pct(stop[0], 0)} (`prune_steps`).")
        else:
            out.append(f"- {MODELS[m]}: every step's observed validation loss is within the budget, so the point "
                       f"rule keeps the same point.")
    out += ["", _over_seeds(data, models), "", _peers(data, models)]
    return "\n".join(out)


SEED_ROWS = (("baseline test accuracy", "baseline_accuracy", "pct"),
             ("pruning: kept sparsity", "pruned_fraction", "pct"),
             ("pruning: test loss (pp)", "pruned_accuracy_loss_pp", "pp"),
             ("PTQ 8/8: test loss (pp)", "ptq8_accuracy_loss_pp", "pp"),
             ("QAT 4/4: test loss (pp)", "qat4_accuracy_loss_pp", "pp"),
             ("ternary weights: test loss (pp)", "ternary_accuracy_loss_pp", "pp"),
             ("joint: test loss (pp)", "joint_accuracy_loss_pp", "pp"),
             ("joint: packed compression", "joint_compression_ratio", "ratio"))


def _over_seeds(data: dict[str, Any], models: list[str]) -> str:
    """The headline figures as mean +- sample SD over the seeds, each seed's value in brackets."""
    have = [m for m in models if isinstance(data[m].get("over_seeds"), dict)]
    if not have:
        return "This file records one seed per model: no spread over seeds."
    fmt = {"pct": lambda v: pct(v), "pp": lambda v: pp(v), "ratio": lambda v: ratio(v, 1)}

    def cell(s: dict[str, Any], how: str) -> str:
        scale = 100.0 if how == "pct" else 1.0
        f = fmt[how]
        sd = f"{scale * s['std']:.2f}" if how != "ratio" else f"{s['std']:.1f}"
        return f"{f(s['mean'])} +- {sd} ({', '.join(f(v) for v in s['per_seed'])})"

    seeds = sorted({tuple(data[m]["over_seeds"]["seeds"]) for m in have})
    rows = [[label, *(cell(data[m]["over_seeds"][key], how) for m in have)] for label, key, how in SEED_ROWS]
    return (f"Over seeds {', '.join(' '.join(map(str, s)) for s in seeds)} (`over_seeds`: each seed trains its own "
            "baseline with the same recipe and compresses it; mean +- sample SD, then each seed's value):\n\n"
            + table(["", *(MODELS[m] for m in have)], rows))


def _other_joint(r: dict[str, Any]) -> str:
    joint = r["joint"]
    others = [k for k in joint if k not in (r["joint_variant"], "quantization") and isinstance(joint[k], dict)]
    return "; ".join(f"{k}: {pp(joint[k]['accuracy_loss_pp'])} pp, {ratio(joint[k]['packed_compression_ratio'], 1)}"
                     for k in others) or "none"


def _peers(data: dict[str, Any], models: list[str]) -> str:
    rows = []
    for m in models:
        peers = data[m].get("peers") or {}
        u = peers.get("unstructured_vs_torch_prune")
        if u:
            rows.append([MODELS[m], f"class-blind vs torch.nn.utils.prune at {pct(u['sparsity_target'], 0)}",
                         pct(u["ours"]["test_accuracy"]), pct(u["torch_global_unstructured"]["test_accuracy"]),
                         f"{1e3 * u['ours']['prune_seconds_median']:.1f} / "
                         f"{1e3 * u['torch_global_unstructured']['prune_seconds_median']:.1f}"])
        s = peers.get("structured_vs_torch_pruning")
        if s:
            rows.append([MODELS[m], f"L1 channels vs Torch-Pruning at {pct(s['amount'], 0)} "
                         f"({num(s['ours']['params'])} params, {num(s['ours']['macs'])} MACs both)",
                         pct(s["ours"]["test_accuracy"]), pct(s["torch_pruning"]["test_accuracy"]),
                         f"{1e3 * s['ours']['prune_seconds_median']:.1f} / "
                         f"{1e3 * s['torch_pruning']['prune_seconds_median']:.1f}"])
    if not rows:
        return "No peer comparison in this file."
    return ("Peers (`peers`; one fine-tuning epoch each, test accuracy after it; prune call: median of 5 "
            "interleaved runs):\n\n" + table(["model", "comparison", "ours", "peer", "prune call ms, ours / peer"],
                                            rows))


def deploy(load: Loader) -> str:
    d = load("deploy")
    out = [produced_by("deploy", command_of(d, DEPLOY_USAGE)) + f" {machine_line(d)}; whole run "
           f"{d['seconds']:.0f} s. Timing: {d.get('timing', 'not recorded')}.", ""]
    out.append(f"- Packed compressed LeNet-5: {num(d['packed_bytes'])} B "
               f"({ratio(d['dense_fp32_bytes'] / d['packed_bytes'], 1)} smaller than its "
               f"{num(d['dense_fp32_bytes'])} B of fp32), test accuracy of `unpack_model` of it "
               f"{pct(d['packed_accuracy'])} (loss {pp(d['packed_accuracy_loss_pp'])} pp against the baseline's "
               f"{pct(d['baseline_accuracy'])}).")
    s = d.get("structured")
    if isinstance(s, dict) and "channels" in s:
        ch = " / ".join(f"{k} {v}" for k, v in s["channels"].items())
        out.append(f"- Structured pruning: channels {ch}; {ratio(s['params_baseline'] / s['params'], 1)} fewer "
                   f"parameters, {ratio(s['macs_baseline'] / s['macs'], 1)} fewer MACs; fp32 test accuracy "
                   f"{pct(s['test_accuracy'])} (loss {pp(s['accuracy_loss_pp'])} pp on test, "
                   f"{pp(s['val_loss_pp'])} pp on validation); stop: {s.get('stop_reason', 'not recorded')}.")
    out.append(f"- ONNX Runtime top-1 agreement with PyTorch (minimum over the ORT variants): "
               f"{pct(d['onnx_top1_agreement'])}.")
    seeds = d.get("best_variant_over_seeds")
    if isinstance(seeds, dict) and "runs" in seeds:
        out.append(over_seeds_line(seeds))
    fz = d.get("fuzz")
    if isinstance(fz, dict):
        out.append(f"- Fuzzing: {num(fz['inputs'])} mutated files, {num(fz['rejected'])} rejected with "
                   f"`PackFormatError`, {num(fz['accepted'])} accepted, {len(fz['failures'])} failures; slowest "
                   f"input {fz['max_seconds']:.1f} s; {d.get('fuzz_seconds', 0):.0f} s in all.")
    out += ["", _variants(d)]
    return "\n".join(out)


def _variants(d: dict[str, Any]) -> str:
    variants: dict[str, Any] = d["variants"]
    has_val = any("val_accuracy" in v for v in variants.values())
    heads = ["variant", *(["val accuracy"] if has_val else []), "test accuracy", "test loss (pp)",
             "top-1 = source", "batch 256 img/s", "batch 1 ms", "ratio to fp32 PyTorch", "peak RSS MB"]
    rows = []
    for name, v in variants.items():
        rows.append([f"`{name}`", *([pct(v["val_accuracy"])] if has_val else []), pct(v["test_accuracy"]),
                     pp(v["accuracy_loss_pp"]), pct(v["top1_agreement_with_pytorch_source"]),
                     num(v["throughput_b256_median"]), f"{v['latency_ms_b1_median']:.3f}",
                     ratio(v["throughput_ratio_vs_fp32_pytorch"]),
                     f"{v['peak_rss_mb_median']:.0f}" if "peak_rss_mb_median" in v else "not recorded"])
    lines = [table(heads, rows), "",
             f"Deployable choice (`best_variant`): `{d['best_variant']}`, {ratio(d['best_throughput_ratio'])} at "
             f"{pp(d['best_variant_accuracy_loss_pp'])} pp on test"
             + (f" ({'meets' if d['best_variant_meets_target_ratio'] else '**misses**'} the "
                f"{ratio(d['target_ratio'])} target)" if "target_ratio" in d else "")
             + ". Fastest structured variant whatever its loss "
             f"(`best_structured_*`): `{d['best_structured_variant']}`, {ratio(d['best_structured_throughput_ratio'])} "
             f"at {pp(d['best_structured_accuracy_loss_pp'])} pp on test."]
    if not has_val:
        lines.append("This file records no validation accuracy per variant and no `selection_rule`: it predates "
                     "the validation-only choice described above, and its `best_variant` was chosen on test "
                     "accuracy.")
    return "\n".join(lines)


def _steps_table(steps: list[dict[str, Any]]) -> str:
    rows = [[s["step"], pct(s["sparsity"], 0), pct(s["val_accuracy"]), pct(s["test_accuracy"]),
             pp(s["val_loss_pp"]), f"{s['val_loss_se_pp']:.2f}", pp(s["val_loss_lower_pp"]), pp(s["test_loss_pp"]),
             "yes" if s["within_budget"] else "no"] for s in steps]
    return table(["step", "sparsity", "val accuracy", "test accuracy", "val loss (pp)", "paired SE (pp)",
                  "lower bound (pp)", "test loss (pp)", "within budget"], rows)


def prune_schedule(load: Loader) -> str:
    data = load("compression")
    out = [produced_by("compression", command_of(data, COMPRESSION_USAGE)) + f" {_split(data)}; baselines: "
           "the shared recipes (`BASELINE_RECIPES`, training cache)."]
    for m in _models(data):
        r = data[m]
        sc = r["prune_schedule"]
        targets = ", ".join(pct(t, 0) for t in sc["targets"])
        out += ["", f"**{MODELS[m]}** (baseline {pct(r['baseline_accuracy'])}; {recipe(r['baseline_training'])}). "
                f"Schedule: {sc['scheme']}, targets {targets}, {sc['finetune_epochs']} fine-tuning epochs per step "
                f"({sc['optimizer']}, lr {sc['finetune_lr']}, shift {sc.get('augment_shift', 0)}), budget "
                f"{sc['budget_pp']} pp on validation, `stop_confidence = {sc['stop_confidence']}`. Kept "
                f"{pct(r['pruned_fraction'], 0)} ({r['pruned_stop_reason']}), test loss "
                f"{pp(r['pruned_accuracy_loss_pp'])} pp.", "", _steps_table(r["prune_steps"])]
    return "\n".join(out)


def prune_seeds(load: Loader) -> str:
    out: list[str] = []
    for name in ("prune_seeds", "prune_to95"):
        d = load(name)
        runs: dict[str, Any] = d["runs"]
        targets = [float(t) for t in d["targets"]]
        heads = ["fine-tuning seed", "kept sparsity", "kept: test loss (pp)",
                 *(f"test loss at {pct(t, 0)}" for t in targets)]
        rows = []
        for seed, run in runs.items():
            by_t = {float(s["target"]): s for s in run["steps"]}
            rows.append([seed, pct(run["kept_sparsity"], 0), pp(run["kept_test_loss_pp"]),
                         *(pp(by_t[t]["test_loss_pp"]) if t in by_t else "not run" for t in targets)])
        if len(runs) > 1:
            losses = [float(r["kept_test_loss_pp"]) for r in runs.values()]
            m, sd = mean_sd(losses)
            rows.append([f"mean +- sd ({len(runs)} seeds)", "", f"{pp(m)} +- {sd:.2f}", *([""] * len(targets))])
        out += [produced_by(name, command_of(d, PRUNE_SEEDS_USAGE[name])) + f" {MODELS.get(d['model'], d['model'])}, "
                f"baseline {pct(d['baseline_accuracy'])}, schedule of `{d['schedule_from']}`.", "",
                table(heads, rows), ""]
    return "\n".join(out)


"""Approximate memories benchmark -> benchmarks/results/memories.json (+ memories_accuracy.png,
memories_energy.png).

1. Voltage-scaled weight SRAM (MATIC, Kim et al., DATE 2018) on the reference LeNet-5
   (benchmarks/_common.BASELINE_RECIPES; 9k MNIST training images, 1k validation, the 10k test images).
   Its weights are stored as int8 codes (symmetric, per output channel). BER against voltage: the
   published KC705-B block-RAM points (28 nm, ``kc705b-28nm``: 0.53-0.59 V measured, fault-free from the
   reported 0.61 V guardband up) and their Gaussian cell-Vmin fit (``kc705b-28nm-probit``), which
   extrapolates below the FPGA's 0.53 V crash voltage to what an ASIC SRAM of that node would do; failing
   cells read 0 (the dumps show 1 -> 0 failures). TEST_CHIPS sampled chips (seeds 0-4).
   Rule, fixed before the run: walking down from the nominal 1.0 V, a voltage passes while the mean
   *validation* accuracy over the chips is within BUDGET_PP of the fault-free (int8) validation accuracy;
   the voltage reached is the last pass. Conventional model: the baseline as it is. Memory-adapted: at
   each voltage below the conventional model's, MAT per chip (fine-tuned from the baseline with the chip's
   failing bits in the forward pass, the baseline's augmentation, Adam, cosine), separately for each of
   the training seeds; each seed walks down until it fails. The MAT learning rate is chosen among
   LRS on validation (seed 0, the test chips' maps, the first voltage below the conventional one) before
   the seeds run. Control: the same fine-tuning without faults, read through the chips like the
   conventional model. Test accuracy (mean and std over chips) is measured at every trained point.
   Energy: weight-memory read energy (CV^2) and the Eyeriss-like accelerator's energy per inference with
   its global buffer at that voltage (crosslayer.hw.voltage), relative to 1.0 V.
2. The curable multiplier cann12 (crosslayer.approx.cured) on the int8 LeNet-5 (weights and activations,
   symmetric per tensor): test accuracy of the exact, cured and uncured emulations, bit equality of the
   cured and exact logits, and the modelled latency / power.

Usage: .venv/bin/python benchmarks/memories.py [--models lenet5] [--seeds 3] [--chips 5] [--epochs 1]
       [--lrs 3e-05,0.0001,0.0003] [--threads 1] [--time-budget-min 40]
Trained adapted models are cached under benchmarks/.work/memories/ (state dicts), so a run stopped by
--time-budget-min is resumed by running the same command again; results are written only by a complete run.
ResNet-20 is not in this branch: --models takes any name of BASELINE_RECIPES (lenet5, lenet300).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

import torch

from _common import BASELINE_RECIPES, RESULTS, WORK, peak_rss_mb, shared_mnist_baseline, write_results  # type: ignore[import-not-found]

BUDGET_PP = 1.0
TEST_CHIPS = 5
# nominal, then the probit curve's BER decades, then 5 mV steps where LeNet-5 starts to fail (BER 2-35 %)
PROBIT_GRID = (1.0, 0.59, 0.55, 0.51, 0.49, 0.47, *(round(0.465 - 0.005 * i, 3) for i in range(14)))
LRS = (3e-5, 1e-4, 3e-4)
CACHE = WORK / "memories"


class OutOfTime(Exception):
    pass


def _ms(vals: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lenet5", help="comma-separated names of BASELINE_RECIPES")
    ap.add_argument("--seeds", type=int, default=3, help="MAT training seeds")
    ap.add_argument("--chips", type=int, default=TEST_CHIPS)
    ap.add_argument("--epochs", type=int, default=1, help="MAT epochs")
    ap.add_argument("--lrs", default=",".join(map(str, LRS)), help="MAT learning rates tried (chosen on validation)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-budget-min", type=float, default=0.0, help="stop training after N minutes (0 = none)")
    ap.add_argument("--skip-cured", action="store_true")
    ap.add_argument("--test-limit", type=int, default=0, help="first N test images (0 = all; for quick trials)")
    ap.add_argument("--train-limit", type=int, default=0, help="MAT training images (0 = all; for quick trials)")
    ap.add_argument("--out", default="memories", help="results name: benchmarks/results/<OUT>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    deadline = t_start + 60 * args.time_budget_min if args.time_budget_min else float("inf")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in BASELINE_RECIPES]
    if unknown:
        raise SystemExit(f"no baseline recipe for {unknown}; known: {', '.join(BASELINE_RECIPES)}")
    res: dict[str, Any] = {"command": " ".join(["benchmarks/memories.py", *sys.argv[1:]]), "budget_pp": BUDGET_PP,
                           "settings": {"models": models, "mat_seeds": list(range(args.seeds)),
                                        "chip_seeds": list(range(args.chips)), "mat_epochs": args.epochs,
                                        "lrs": args.lrs, "threads": args.threads,
                                        "time_budget_min": args.time_budget_min, "test_limit": args.test_limit,
                                        "train_limit": args.train_limit},
                           "models": {}}
    try:
        for name in models:
            res["models"][name] = memory_benchmark(name, args, deadline)
    except OutOfTime:
        print(f"time budget reached after {(time.perf_counter() - t_start) / 60:.1f} min; trained models are cached "
              f"in {CACHE}; run the same command again to continue")
        return
    if not args.skip_cured:
        res["cured"] = cured_benchmark(args)
    res["seconds"] = time.perf_counter() - t_start
    res["peak_rss_mb"] = peak_rss_mb()
    write_results(args.out, res)


def _baseline(name: str, args: argparse.Namespace) -> tuple[Any, Any]:
    from crosslayer.data import DataSplits

    data, model, _ = shared_mnist_baseline(name)
    if args.test_limit or args.train_limit:  # quick trials only; the reported run uses every image
        data = DataSplits(train=data.train.subset(args.train_limit) if args.train_limit else data.train,
                          val=data.val, test=data.test.subset(args.test_limit) if args.test_limit else data.test)
    return model.eval(), data


def memory_benchmark(name: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    from crosslayer.hw.voltage import SramVoltageModel
    from crosslayer.memory import (
        builtin_curve,
        chip_correct,
        lowest_within_budget,
        memory_layout,
        sample_chip,
        weight_targets,
    )
    from crosslayer.memory.energy import accelerator_energy

    model, data = _baseline(name, args)
    aug = {k: v for k, v in BASELINE_RECIPES[name].items() if "augment" in k}
    tensors, width = memory_layout(weight_targets(model))
    free_val = float(chip_correct(model, data.val, None).double().mean())
    free_test = float(chip_correct(model, data.test, None).double().mean())
    out: dict[str, Any] = {"train_images": len(data.train), "val_images": len(data.val),
                           "test_images": len(data.test), "memory_bits": width * sum(n for _, n in tensors),
                           "word_bits": width, "baseline_recipe": BASELINE_RECIPES[name],
                           "float_test_accuracy": float((torch.argmax(_predict(model, data.test.images), 1)
                                                         == data.test.labels).double().mean()),
                           "fault_free_val_accuracy": free_val, "fault_free_test_accuracy": free_test,
                           "curves": {}}
    vm = SramVoltageModel(nominal_v=1.0)
    for curve_name, grid in (("kc705b-28nm", None), ("kc705b-28nm-probit", PROBIT_GRID)):
        curve = builtin_curve(curve_name)
        grid = grid or curve.default_grid()
        chips = [sample_chip(tensors, width, curve, v_low=min(grid), seed=i) for i in range(args.chips)]
        t0 = time.perf_counter()
        conv_val, conv_test = _cached_sweep(name, curve_name, model, chips, grid, data)
        v_conv = lowest_within_budget(conv_val, free_val, BUDGET_PP)
        energy = accelerator_energy(model, data.test.images[:64], "eyeriss", grid, vm)
        c: dict[str, Any] = {
            "node": curve.node, "source": curve.source, "fault_mode": curve.fault_mode, "chips": args.chips,
            "grid": list(grid), "conventional_voltage": v_conv, "sweep_seconds": time.perf_counter() - t0,
            "points": [{"voltage": v, "ber": curve.ber(v), "faulty_bits_mean": statistics.fmean(
                ch.fault_count(v) for ch in chips), "read_energy": vm.read_energy_ratio(v),
                "accelerator_energy": energy[v]["total_ratio"], "glb_energy": energy[v]["buffer_ratio"],
                "conventional_val": _ms(list(pv.accuracies)), "conventional_test": _ms(list(pt.accuracies)),
                "conventional_test_per_chip": list(pt.accuracies)}
                for v, pv, pt in zip(grid, conv_val, conv_test, strict=True)]}
        print(f"{name} {curve_name}: conventional reaches {v_conv} V", flush=True)
        below = [v for v in grid if v_conv is not None and v < v_conv]
        if curve_name.endswith("probit") and below:
            c["adapted"] = adapted_runs(name, model, data, chips, below, free_val, args, aug, deadline)
            c["control"] = control_runs(name, model, data, chips, grid, v_conv, c["adapted"], free_val, args, aug,
                                        deadline)
            by_v = {p["voltage"]: p for p in c["points"]}
            for p in c["adapted"]["points"]:
                by_v[p["voltage"]]["adapted_test"] = p["test"]
                by_v[p["voltage"]]["adapted_val"] = p["val"]
        c["summary"] = summary(c, vm, energy)
        out["curves"][curve_name] = c
        _plots(name, curve, c, free_test, vm, args.out)
    return out


def _cached_sweep(name: str, curve: str, model: Any, chips: list[Any], grid: tuple[float, ...],
                  data: Any) -> tuple[list[Any], list[Any]]:
    """The conventional model's sweeps on validation and test (cached in benchmarks/.work for reruns)."""
    from crosslayer.memory import ChipAccuracy, voltage_sweep

    key = CACHE / f"{name}-{curve}-sweep-c{len(chips)}-t{len(data.test)}-{abs(hash(grid)) % 10**8}.json"
    if key.is_file():
        raw = json.loads(key.read_text())
        return ([ChipAccuracy(v, tuple(a)) for v, a in raw["val"]], [ChipAccuracy(v, tuple(a)) for v, a in raw["test"]])
    val, test = voltage_sweep(model, chips, grid, data.val), voltage_sweep(model, chips, grid, data.test)
    from crosslayer.fileio import atomic_write_json

    atomic_write_json(key, {"val": [[p.voltage, list(p.accuracies)] for p in val],
                            "test": [[p.voltage, list(p.accuracies)] for p in test]})
    return val, test


def _predict(model: Any, images: torch.Tensor) -> torch.Tensor:
    from crosslayer.train import predict

    return predict(model, images)


def _mat(name: str, model: Any, data: Any, chip: Any, v: float, lr: float, seed: int, args: argparse.Namespace,
         aug: dict[str, Any], deadline: float) -> Any:
    """The MAT model of (chip, voltage, lr, seed), from the cache or trained (and cached)."""
    from crosslayer.memory import AdaptConfig, memory_adaptive_train

    tag = f"chip{chip.seed}-{chip.mode}" if chip is not None else "nofaults"
    key = CACHE / f"{name}-{tag}-v{v:.3f}-lr{lr:g}-e{args.epochs}-n{len(data.train)}-s{seed}.pt"
    net = copy.deepcopy(model)
    if key.is_file():
        net.load_state_dict(torch.load(key, weights_only=True))
        return net.eval()
    if time.perf_counter() > deadline:
        raise OutOfTime
    cfg = AdaptConfig(epochs=args.epochs, lr=lr, **aug)
    net, _ = memory_adaptive_train(model, chip, v, data.train, data.val, cfg, seed=seed)
    CACHE.mkdir(parents=True, exist_ok=True)
    from crosslayer.fileio import save_torch

    save_torch(key, net.state_dict())
    return net.eval()


def adapted_runs(name: str, model: Any, data: Any, chips: list[Any], below: list[float], free_val: float,
                 args: argparse.Namespace, aug: dict[str, Any], deadline: float) -> dict[str, Any]:
    from crosslayer.memory import chip_accuracy
    from crosslayer.train import within_budget

    lrs = [float(x) for x in args.lrs.split(",") if x.strip()]
    v0 = below[0]
    selection = {}
    for lr in lrs:  # the learning rate: best mean validation accuracy at the first voltage below, seed 0
        nets = [_mat(name, model, data, ch, v0, lr, 0, args, aug, deadline) for ch in chips]
        selection[str(lr)] = chip_accuracy(nets, data.val, chips, v0).mean
    lr = float(max(selection, key=lambda k: selection[k]))
    print(f"MAT learning rate {lr:g} (validation at {v0} V: {selection})", flush=True)
    per_seed: dict[str, Any] = {}
    pooled: dict[float, dict[str, list[float]]] = {}
    for seed in range(args.seeds):
        reached = None
        for v in below:
            nets = [_mat(name, model, data, ch, v, lr, seed, args, aug, deadline) for ch in chips]
            val = chip_accuracy(nets, data.val, chips, v)
            test = chip_accuracy(nets, data.test, chips, v)
            pooled.setdefault(v, {"val": [], "test": []})
            pooled[v]["val"].extend(val.accuracies)
            pooled[v]["test"].extend(test.accuracies)
            ok = within_budget(100 * (free_val - val.mean), BUDGET_PP)
            print(f"seed {seed} {v} V: MAT val {val.mean:.4f} test {test.mean:.4f} ({'pass' if ok else 'fail'})",
                  flush=True)
            if not ok:
                break
            reached = v
        per_seed[str(seed)] = {"voltage": reached}
    reached_all = [s["voltage"] for s in per_seed.values()]
    headline = min(v for v in reached_all if v is not None) if any(v is not None for v in reached_all) else None
    result: dict[str, Any] = {
        "lr": lr, "lr_selection_val": selection, "lr_selection_voltage": v0, "epochs": args.epochs, **aug,
        "optimizer": "adam", "schedule": "cosine", "seeds": args.seeds, "per_seed": per_seed,
        "points": [{"voltage": v, "val": _ms(p["val"]), "test": _ms(p["test"]), "models": len(p["val"]),
                    "test_per_model": p["test"]} for v, p in sorted(pooled.items(), reverse=True)],
    }
    for seed, entry in per_seed.items():  # test accuracy of each seed's models at its own voltage, and cross-chip
        v = entry["voltage"]
        if v is None:
            continue
        nets = [_mat(name, model, data, ch, v, lr, int(seed), args, aug, deadline) for ch in chips]
        own = chip_accuracy(nets, data.test, chips, v).accuracies
        cross = [chip_accuracy(net, data.test, [o for o in chips if o is not ch], v).mean
                 for net, ch in zip(nets, chips, strict=True)]
        entry.update({"test": _ms(list(own)), "test_per_chip": list(own), "test_on_other_chips": _ms(cross)})
    result["headline_voltage_all_seeds"] = (max(v for v in reached_all if v is not None)
                                            if all(v is not None for v in reached_all) else headline)
    return result


def control_runs(name: str, model: Any, data: Any, chips: list[Any], grid: tuple[float, ...], v_conv: float,
                 adapted: dict[str, Any], free_val: float, args: argparse.Namespace, aug: dict[str, Any],
                 deadline: float) -> dict[str, Any]:
    """Fault-free fine-tuning with MAT's schedule: does extra training alone move the voltage?"""
    from crosslayer.memory import chip_accuracy, chip_correct, lowest_within_budget

    lr = adapted["lr"]
    lowest = min((p["voltage"] for p in adapted["points"]), default=v_conv)
    vs = [v for v in grid if lowest <= v <= v_conv]
    per_seed = {}
    reached = [e["voltage"] for e in adapted["per_seed"].values() if e["voltage"] is not None]
    test_vs = sorted({v_conv, *reached}, reverse=True)  # test: the conventional and the adapted voltages
    for seed in range(args.seeds):
        net = _mat(name, model, data, None, 1.0, lr, seed, args, aug, deadline)
        val = [chip_accuracy(net, data.val, chips, v) for v in vs]
        ref = float(chip_correct(net, data.val, None).double().mean())
        per_seed[str(seed)] = {
            "fault_free_val": ref, "fault_free_test": float(chip_correct(net, data.test, None).double().mean()),
            "voltage_vs_baseline_reference": lowest_within_budget(val, free_val, BUDGET_PP),
            "val": {str(v): p.mean for v, p in zip(vs, val, strict=True)},
            "test": {str(v): chip_accuracy(net, data.test, chips, v).mean for v in test_vs}}
    return {"lr": lr, "epochs": args.epochs, "voltages": vs, "per_seed": per_seed}


def summary(c: dict[str, Any], vm: Any, energy: dict[float, dict[str, float]]) -> dict[str, Any]:
    by_v = {p["voltage"]: p for p in c["points"]}
    s: dict[str, Any] = {}
    v = c["conventional_voltage"]
    if v is not None:
        s["conventional"] = {"voltage": v, "test": by_v[v]["conventional_test"],
                             "read_energy_saving": 1 - vm.read_energy_ratio(v),
                             "accelerator_energy_saving": 1 - energy[v]["total_ratio"]}
    ad = c.get("adapted")
    if ad:
        seeds = [e for e in ad["per_seed"].values() if e["voltage"] is not None]
        vs = [e["voltage"] for e in ad["per_seed"].values()]
        s["adapted"] = {"voltage_per_seed": vs,
                        "voltage_mean": statistics.fmean(x for x in vs if x is not None) if seeds else None,
                        "test_mean_over_seeds": _ms([e["test"]["mean"] for e in seeds]) if seeds else None,
                        "read_energy_saving_per_seed": [None if x is None else 1 - vm.read_energy_ratio(x)
                                                        for x in vs],
                        "accelerator_energy_saving_per_seed": [None if x is None else 1 - energy[x]["total_ratio"]
                                                               for x in vs]}
        if v is not None and seeds:
            s["adapted"]["read_energy_saving_vs_conventional_per_seed"] = [
                None if x is None else 1 - vm.read_energy_ratio(x) / vm.read_energy_ratio(v) for x in vs]
    return s


def _plots(name: str, curve: Any, c: dict[str, Any], free_test: float, vm: Any, out: str) -> None:
    from crosslayer.memory.adapt import ChipAccuracy
    from crosslayer.memory.plots import accuracy_vs_voltage, energy_vs_voltage

    if not curve.name.endswith("probit"):
        return
    conv = [ChipAccuracy(p["voltage"], tuple(p["conventional_test_per_chip"])) for p in c["points"]]
    series = {"conventional": conv}
    ad = c.get("adapted")
    if ad:
        series["memory-adapted (MAT per chip; every chip and seed)"] = [
            ChipAccuracy(p["voltage"], tuple(p["test_per_model"])) for p in ad["points"]]
    fig = accuracy_vs_voltage(series, free_test, BUDGET_PP, curve, title=f"{name}: accuracy vs weight-memory voltage")
    (RESULTS / f"{out}_accuracy.png").write_bytes(fig.png)
    s = c["summary"]
    marks = {"conventional": s.get("conventional", {}).get("voltage"),
             "adapted (lowest seed)": min((v for v in s.get("adapted", {}).get("voltage_per_seed", []) if v),
                                          default=None)}
    fig = energy_vs_voltage(vm, c["grid"], marks, title=f"{name}: weight-memory energy vs voltage")
    (RESULTS / f"{out}_energy.png").write_bytes(fig.png)


def cured_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from crosslayer.approx import approximable_layers, approximate_model, uniform_metrics
    from crosslayer.approx.cured import cured_cost, cured_design, cured_model
    from crosslayer.approx.stage import ensure_int8
    from crosslayer.train import predict

    model, data = _baseline("lenet5", args)
    q, _ = ensure_int8(model, data.train.images[:1000])
    layers = approximable_layers(q)
    d = cured_design("cann12")
    t0 = time.perf_counter()
    exact = predict(approximate_model(q, dict.fromkeys(layers, "exact")), data.test.images)
    cured = predict(cured_model(q, d), data.test.images)
    uncured = predict(approximate_model(q, dict.fromkeys(layers, d.uncured)), data.test.images)
    secs = time.perf_counter() - t0
    acc = {k: float((v.argmax(1) == data.test.labels).double().mean())
           for k, v in (("exact", exact), ("cured", cured), ("uncured", uncured))}
    cost = cured_cost(d.k)
    return {"design": d.name, "model": "lenet5 int8 (symmetric per-tensor weights and activations)",
            "test_images": len(data.test), "test_accuracy": acc, "cured_equals_exact_logits": bool(torch.equal(
                cured, exact)), "uncured_med_uniform": uniform_metrics(d.uncured).med,
            "relative_latency": cost.relative_latency, "relative_area": cost.relative_area,
            "supply_ratio": cost.supply_ratio, "relative_power": cost.relative_power,
            "modelled_power_saving": 1 - cost.relative_power, "emulation_seconds": secs}


if __name__ == "__main__":
    main()

"""Approximate multipliers on LeNet-5 / MNIST (9k train, 1k validation, 10k test): accuracy vs MED of every
multiplier, emulation speed of EVERY library multiplier against two exact baselines, bit-exactness of every
multiplier against the integer reference, and the greedy per-layer selection at <= 0.5 pp.

Speed. Three kinds of model compute the same int8 LeNet-5 on the same test images:
- "fake-quant fp32 GEMM": the QuantConv2d / QuantLinear model (fake quantization, float32 convolutions);
- "int8 kernel": PyTorch's own int8 inference (torch.ao FX static quantization, x86 backend: real int8
  convolution / linear kernels with int32 accumulation), calibrated on the same training images;
- "emulation <name>": ``crosslayer.approx.approximate_model`` with multiplier <name> in every layer.
Each measurement runs in its own process with ``--threads`` torch threads, the variants are interleaved
(rotated order) over ``--rounds`` rounds, and the process reports the median wall time of ``--repeats``
``predict`` passes over the timed images (after a warm-up batch), its peak resident memory and the rise of
its resident memory over the loaded model and images. Ratios are
medians of the per-round ratios to the fake-quant model of the same round; every raw round is kept.

The LeNet-5 is the project's shared baseline (``_common.shared_mnist_baseline``: BASELINE_RECIPES["lenet5"], seed
0, from the training cache). The selection runs on the whole validation split with the paired
confidence-margin acceptance rule of ``crosslayer.approx.select`` (confidence 0.99, fixed before this run),
then the chosen assignment is verified on the test images; the selection never sees a test image. It runs once
per seed of ``--seeds`` (default 1, 2, 3): each seed draws the 1,000 calibration images of the int8 model, so
the activation ranges, the selection and the test loss move with it; the headline loss and power saving are
the means over the seeds, with their spread, every seed kept. Seeds 1-3 are fresh: the earlier single run
(calibration on the first 1,000 training images) was made after the confidence had been raised from 0.95
following a test outcome. The sweep (accuracy vs MED), the bit-exactness checks and the speed use the model
calibrated on the first 1,000 training images.

ResNet-20 and MobileNetV2-0.5 (Fashion-MNIST shapes, 28 x 28 x 1, 10 classes) are timed the same way, every
multiplier in every approximable layer, on ``--zoo-timing-images`` test images. Their weights come from a short
training (SPEED_TRAIN: one epoch on 5,000 Fashion-MNIST images, cached), not from their 30-60 minute baselines:
the timing needs realistic weight and activation codes, not accuracy, and no accuracy of these models is
reported here. ``--speed-of MODEL ...`` re-measures only those models' speed and merges it into approx.json.

    .venv/bin/python benchmarks/approx.py [--rounds 5] [--repeats 3] [--timing-images 3000] [--seeds 1,2,3]
    .venv/bin/python benchmarks/approx.py --skip-speed    # keep approx.json's speed entries (timed by --speed-of)
    .venv/bin/python benchmarks/approx.py --speed-of resnet20 mobilenetv2-0.5 [--zoo-timing-images 500]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
from torch import nn

from _common import (
    BASELINE_RECIPES,
    RESULTS,
    WORK,
    merge_results,
    reset_peak_rss,
    rss_mb,
    shared_mnist_baseline,
    spread,
    window_peak_rss_mb,
    write_results,
)
from crosslayer.approx import (
    approximate_model,
    greedy_select,
    integer_reference_model,
    layer_macs,
    library,
    paired_loss,
    per_layer_sweep,
    sensitivity_ranking,
    uniform_metrics,
)
from crosslayer.approx.catalog import DEFAULT_NAMES
from crosslayer.approx.select import accuracy_on, as_accuracy, correct_on
from crosslayer.data import load_splits
from crosslayer.models import build_model
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.train import TrainConfig, evaluate, fit_cached, predict, seed_everything

TRAIN = TrainConfig(**BASELINE_RECIPES["lenet5"])  # benchmarks/baseline.py settings
BUDGET_PP = 0.5
DIR = WORK / "approx"
FAKE, INT8 = "fake-quant fp32 GEMM", "int8 kernel (torch.ao x86)"
TIMED_MODELS = ("lenet5", "resnet20", "mobilenetv2-0.5")
# the weights of the models timed beside LeNet-5 (speed only; see the docstring)
SPEED_TRAIN = {"dataset": "fashion-mnist", "train_images": 5000, "epochs": 1, "batch_size": 128, "optimizer": "sgd",
               "lr": 0.05}


def int8_model(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    """PyTorch's int8 static quantization of the float model (FX graph mode, x86 backend): per-tensor symmetric
    int8 weights as ours, activations observed on ``calib``; real int8 kernels with int32 accumulation."""
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import MinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
                      weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), QConfigMapping().set_global(qconfig), (calib[:1],))
        with torch.no_grad():
            for i in range(0, len(calib), 500):
                prepared(calib[i:i + 500])
        return convert_fx(prepared)


def calibration_images(data: Any, seed: int) -> torch.Tensor:
    """1,000 training images drawn with ``seed``: the calibration set of one selection run."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:1000]
    return data.train.images[order]


def fake_quant(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    """The int8 fake-quantized copy of ``model`` (weights and activations), calibrated on ``calib``."""
    q = quantize_model(copy.deepcopy(model), FixedPointSpec(bits=8), FixedPointSpec(bits=8))
    with calibrating(q):
        predict(q, calib)
    return q.eval()


def speed_model(model_name: str) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """A model timed beside LeNet-5: briefly trained (SPEED_TRAIN, cached) and its int8 fake-quantized form
    calibrated on 1,000 training images; those calibration images and the test images to time."""
    data = load_splits(SPEED_TRAIN["dataset"], None, seed=0)
    train = data.train.subset(SPEED_TRAIN["train_images"])
    seed_everything(0)
    model = build_model(model_name)
    cfg = TrainConfig(epochs=SPEED_TRAIN["epochs"], batch_size=SPEED_TRAIN["batch_size"],
                      optimizer=SPEED_TRAIN["optimizer"], lr=SPEED_TRAIN["lr"])
    fit_cached(model_name, model, train, data.val.subset(500), cfg, seed=0, desc=f"{model_name} (speed weights)")
    model.eval()
    return model, fake_quant(model, train.images[:1000]), train.images[:1000], data.test.images


def _save_for_workers(model_name: str, model: nn.Module, q: nn.Module, calib: torch.Tensor) -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), DIR / f"{model_name}_float.pt")
    torch.save(q.state_dict(), DIR / f"{model_name}_int8.pt")
    np.save(DIR / f"{model_name}_calib.npy", calib.numpy())


def speed_entry(model_name: str, layers: list[str], args: argparse.Namespace, images: torch.Tensor) -> dict[str, Any]:
    """One model's speed table: the two exact baselines and every multiplier in every layer of ``layers``."""
    variants = [FAKE, INT8, *args.multipliers]
    table = timing(model_name, variants, layers, args, images)
    emu = {v: t for v, t in table.items() if v not in (FAKE, INT8)}
    print(json.dumps({v: round(t["slowdown_vs_fake_quant"], 2) for v, t in table.items()}), flush=True)
    return {"images": len(images), "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats,
            "layers": layers, "variants": table,
            "max_slowdown_vs_fake_quant": max(t["slowdown_vs_fake_quant"] for t in emu.values()),
            "slowest_multiplier": max(emu, key=lambda v: emu[v]["slowdown_vs_fake_quant"]),
            "int8_kernel_speedup_vs_fake_quant": 1.0 / table[INT8]["slowdown_vs_fake_quant"]}


def zoo_speed(model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The speed entry of a model timed beside LeNet-5 (:func:`speed_model`)."""
    from crosslayer.approx import approximable_layers

    model, q, calib, test = speed_model(model_name)
    _save_for_workers(model_name, model, q, calib)
    layers = approximable_layers(q)
    entry = speed_entry(model_name, layers, args, test[:args.zoo_timing_images])
    return {**entry, "weights": {**SPEED_TRAIN, "seed": 0, "note": "speed only; no accuracy reported"}}


def _rebuild(model_name: str) -> tuple[nn.Module, nn.Module]:
    """The float and fake-quantized models from the state dicts the main process saved (no data loading)."""
    model = build_model(model_name)
    model.load_state_dict(torch.load(DIR / f"{model_name}_float.pt", weights_only=True))
    q = quantize_model(copy.deepcopy(model), FixedPointSpec(bits=8), FixedPointSpec(bits=8))
    q.load_state_dict(torch.load(DIR / f"{model_name}_int8.pt", weights_only=True))
    return model.eval(), q.eval()


def worker(spec_path: str) -> None:
    """Child process: time one variant over the saved images; print one RESULT line."""
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    model, q = _rebuild(spec["model"])
    images = torch.from_numpy(np.load(spec["images"], allow_pickle=False))
    variant = spec["variant"]
    rss0 = rss_mb()
    reset_peak_rss()
    if variant == FAKE:
        run = q
    elif variant == INT8:
        run = int8_model(model, torch.from_numpy(np.load(DIR / f"{spec['model']}_calib.npy", allow_pickle=False)))
    else:
        run = approximate_model(q, {n: variant for n in spec["layers"]})
    with torch.no_grad():
        t0 = time.perf_counter()
        predict(run, images[:1000])  # warm-up, one full batch: kernels, tables, caches are built here
        first = time.perf_counter() - t0
        reps = []
        for _ in range(spec["repeats"]):  # the process's figure: the median of a few passes (transient load)
            t0 = time.perf_counter()
            predict(run, images)
            reps.append(time.perf_counter() - t0)
    peak = window_peak_rss_mb()
    print("RESULT " + json.dumps({"seconds": statistics.median(reps), "repeats": reps, "first_batch_seconds": first,
                                  "peak_rss_mb": peak, "working_mb": peak - rss0}), flush=True)


def timing(model_name: str, variants: list[str], layers: list[str], args: argparse.Namespace,
           images: torch.Tensor) -> dict[str, Any]:
    """Interleaved rounds of one process per (variant, round); medians and raw rounds."""
    DIR.mkdir(parents=True, exist_ok=True)
    img_path = DIR / f"{model_name}_images.npy"
    np.save(img_path, images.numpy())
    raw: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            spec = DIR / "spec.json"
            spec.write_text(json.dumps({"model": model_name, "variant": v, "layers": layers, "images": str(img_path),
                                        "threads": args.threads, "repeats": args.repeats}))
            proc = subprocess.run([sys.executable, __file__, "--worker", str(spec)], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"worker {v!r} failed:\n{proc.stderr[-2000:]}")
            raw[v].append(json.loads(line[7:]))
        print(f"{model_name} timing round {r + 1}/{args.rounds} done", flush=True)
    n = len(images)
    base = [e["seconds"] for e in raw[FAKE]]
    table = {}
    for v in variants:
        secs = [e["seconds"] for e in raw[v]]
        table[v] = {"images_per_s": n / statistics.median(secs),
                    "slowdown_vs_fake_quant": statistics.median(a / b for a, b in zip(secs, base, strict=True)),
                    "peak_rss_mb": statistics.median(e["peak_rss_mb"] for e in raw[v]),
                    "working_mb": statistics.median(e["working_mb"] for e in raw[v]),
                    "first_batch_seconds": statistics.median(e["first_batch_seconds"] for e in raw[v]),
                    "rounds": raw[v]}
    int8 = [e["seconds"] for e in raw[INT8]]
    for v in variants:
        table[v]["slowdown_vs_int8_kernel"] = statistics.median(
            a / b for a, b in zip((e["seconds"] for e in raw[v]), int8, strict=True))
    return table


def merge_speed(args: argparse.Namespace, lenet_layers: list[str], lenet_images: torch.Tensor) -> None:
    """``--speed-of``: re-measure the named models' speed; every other key of approx.json is kept."""
    path = RESULTS / "approx.json"
    speed = dict(json.loads(path.read_text()).get("speed", {})) if path.is_file() else {}
    for name in args.speed_of:
        speed[name] = (speed_entry(name, lenet_layers, args, lenet_images) if name == "lenet5"
                       else zoo_speed(name, args))
        speed[name]["command"] = "python benchmarks/approx.py " + " ".join(sys.argv[1:])
    merge_results("approx", {"speed": speed})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timing-images", type=int, default=3000, help="test images timed per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (medians)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per process (its median is the round's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every timed process")
    ap.add_argument("--sweep-limit", type=int, default=10000, help="test images for the accuracy-vs-MED sweep")
    ap.add_argument("--select-limit", type=int, default=0, help="validation images used by the selection (0 = all)")
    ap.add_argument("--confidence", type=float, default=0.99, help="one-sided confidence of the acceptance rule")
    ap.add_argument("--final-limit", type=int, default=10000, help="test images for the selected assignment")
    ap.add_argument("--bitexact-limit", type=int, default=1000, help="test images: exact multiplier vs reference")
    ap.add_argument("--bitexact-each", type=int, default=100, help="test images: every multiplier vs reference")
    ap.add_argument("--skip-selection", action="store_true", help="speed and bit-exactness only")
    ap.add_argument("--skip-speed", action="store_true", help="keep approx.json's speed entries (see --speed-of)")
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 3],
                    help="calibration seeds of the selection runs (comma-separated)")
    ap.add_argument("--multipliers", nargs="*", default=list(DEFAULT_NAMES), help="multipliers timed (default: all)")
    ap.add_argument("--zoo-timing-images", type=int, default=500,
                    help="test images timed per measurement for ResNet-20 / MobileNetV2")
    ap.add_argument("--speed-of", nargs="+", choices=TIMED_MODELS, default=None,
                    help="re-measure only these models' speed and merge it into approx.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    torch.set_num_threads(args.threads)
    kept_speed = None
    if args.skip_speed:  # read before this run writes approx.json
        earlier = json.loads((RESULTS / "approx.json").read_text()) if (RESULTS / "approx.json").is_file() else {}
        if "speed" not in earlier:
            raise SystemExit("--skip-speed: approx.json has no speed entries to keep; run --speed-of first")
        kept_speed = earlier["speed"]
    data, model, trained = shared_mnist_baseline("lenet5")
    q = fake_quant(model, data.train.images[:1000])
    layers = ["conv1", "conv2", "fc1", "fc2"]
    _save_for_workers("lenet5", model, q, data.train.images[:1000])
    if args.speed_of:
        merge_speed(args, layers, data.test.images[:args.timing_images])
        return
    out: dict[str, Any] = {"model": "lenet5", "train_images": len(data.train), "test_images": len(data.test),
                           "training": {**vars(TRAIN), "seed": 0, "cached": trained.cached,
                                        "best_val_accuracy": trained.best_val_accuracy},
                           "float_test_accuracy": evaluate(model, data.test).accuracy,
                           "settings": {k: v for k, v in vars(args).items() if k != "worker"}, "complete": False,
                           "command": "python benchmarks/approx.py " + " ".join(sys.argv[1:])}
    exact = approximate_model(q, {n: "exact" for n in layers})

    # bit-exactness: the exact multiplier on many images, every library multiplier on fewer (the reference is slow)
    n_bx = min(args.bitexact_limit, len(data.test))
    imgs = data.test.images[:n_bx]
    out["exact_bitexact"] = torch.equal(predict(exact, imgs), predict(integer_reference_model(q), imgs))
    out["bitexact_images"] = n_bx
    sub = data.test.images[:args.bitexact_each]
    every = {}
    for name in DEFAULT_NAMES:
        assign = {n: name for n in layers}
        emu = approximate_model(q, assign)
        every[name] = {"bitexact": torch.equal(predict(emu, sub), predict(integer_reference_model(q, assign), sub)),
                       "kernels": {n: emu.get_submodule(n).kernel(emu.get_submodule(n)._weight_codes().codes).method
                                   for n in layers}}
    out["every_multiplier_bitexact"] = every
    out["every_multiplier_bitexact_images"] = len(sub)
    out["all_bitexact"] = out["exact_bitexact"] and all(e["bitexact"] for e in every.values())
    int8 = int8_model(model, data.train.images[:1000])
    out["int8_kernel_test_accuracy"] = evaluate(int8, data.test).accuracy
    out["fake_quant_test_accuracy"] = evaluate(q, data.test).accuracy
    out["int8_kernel_top1_agreement_with_fake_quant"] = float(
        (predict(int8, data.test.images).argmax(1) == predict(q, data.test.images).argmax(1)).float().mean())
    write_results("approx", out)

    # speed: every multiplier against the two exact baselines, one process per measurement, interleaved
    if kept_speed is not None:
        speed = kept_speed  # each entry records the --speed-of command that measured it
    else:
        speed = {"lenet5": speed_entry("lenet5", layers, args, data.test.images[:args.timing_images])}
        for name in TIMED_MODELS[1:]:
            speed[name] = zoo_speed(name, args)
    out["speed"] = speed
    out["speed_note"] = ("slowdown = median over rounds of (variant seconds / fake-quant seconds of the same round); "
                         "peak_rss_mb = peak resident memory of the measuring process (torch runtime, model, images "
                         "included); working_mb = its peak above the resident memory once the model and images were "
                         "loaded (conversion, kernel tables, im2col buffers, activations of batches of 1,000); the "
                         "timed predict follows a warm-up batch of 1,000 images (first_batch_seconds), in which the "
                         "kernels build their per-layer tables once")
    write_results("approx", out)
    if args.skip_selection:
        out["complete"] = True
        write_results("approx", out)
        return

    sweep = data.test.subset(args.sweep_limit)
    score_test = accuracy_on(sweep)
    mults = library()
    rows = []
    for m in mults:
        met = uniform_metrics(m)
        acc = as_accuracy(score_test(approximate_model(q, {n: m for n in layers})))
        rows.append({"name": m.name, "med": met.med, "mred": met.mred, "wce": met.wce, "bias": met.bias,
                     "relative_power": m.relative_power, "accuracy": acc})
        print(f"{m.name:10s} MED {met.med:8.1f} acc {acc:.4f}", flush=True)
    out.update({"multipliers": rows, "sweep_test_images": len(sweep),
                "exact_int8_test_accuracy": next(r["accuracy"] for r in rows if r["name"] == "exact")})
    write_results("approx", out)

    val = data.val.subset(args.select_limit) if args.select_limit else data.val
    final = data.test.subset(args.final_limit)
    macs = layer_macs(q, data.test.images[:1])  # the architecture's, the same for every calibration
    runs = [select_once(model, data, val, final, seed, mults, macs, args) for seed in args.seeds]
    losses = [r["test_loss_pp"] for r in runs]
    out.update({
        "selection_seeds": args.seeds, "selection_runs": runs,
        "selected_accuracy_loss_pp": statistics.mean(losses), "selected_accuracy_loss": spread(losses),
        "selected_power_saving": statistics.mean(r["power_saving"] for r in runs),
        "selected_power_saving_spread": spread([r["power_saving"] for r in runs]),
        "final_test_images": len(final), "selection_on": f"validation ({len(val)} images)",
        "selection_rule": (f"accept if loss + z*SE <= {BUDGET_PP} pp (paired SE of the accuracy difference, one-sided "
                           f"{args.confidence:.2f}, z = {statistics.NormalDist().inv_cdf(args.confidence):.3f})"),
        "selection_confidence": args.confidence, "budget_pp": BUDGET_PP,
        "layer_macs": macs, "complete": True,
    })
    write_results("approx", out)


def select_once(model: nn.Module, data: Any, val: Any, final: Any, seed: int, mults: list[Any],
                macs: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """One selection run: the int8 model calibrated on ``seed``'s images, the probe sweep and the greedy selection
    on validation, the chosen assignment measured once on ``final`` (test); ``macs`` per approximable layer."""
    layers = list(macs)
    q = fake_quant(model, calibration_images(data, seed))
    exact = approximate_model(q, {n: "exact" for n in layers})
    score_val = correct_on(val)
    ref_val = score_val(exact)
    probe = [m for m in mults if m.name in ("mitchell", "trunc8")]
    probe_pts = per_layer_sweep(q, probe, score_val)
    ranking = sensitivity_ranking(probe_pts, as_accuracy(ref_val))
    sel = greedy_select(q, mults, ranking, score_val, budget_pp=BUDGET_PP, macs=macs,
                        reference=ref_val, single_layer={(p.layer, p.multiplier): p.accuracy for p in probe_pts},
                        confidence=args.confidence)
    chosen = approximate_model(q, {n: sel.assignment.get(n, "exact") for n in layers})
    score_final = correct_on(final)
    ok_sel, ok_exact = score_final(chosen), score_final(exact)
    loss, se = paired_loss(ok_exact, ok_sel)
    run = {"seed": seed, "calibration": "1,000 training images drawn with the seed",
           "assignment": {n: m.name for n, m in sel.assignment.items()}, "ranking": ranking,
           "ranking_probe": [m.name for m in probe], "power_saving": sel.power_saving,
           "val_accuracy_exact": sel.reference_accuracy, "val_loss_pp": sel.loss_pp, "val_margin_pp": sel.margin_pp,
           "val_loss_bound_pp": sel.loss_bound_pp, "trace": sel.trace, "greedy_evaluations": sel.evaluations,
           "exact_int8_test_accuracy": as_accuracy(ok_exact), "selected_test_accuracy": as_accuracy(ok_sel),
           "test_loss_pp": 100 * loss, "test_loss_se_pp": 100 * se}
    print(f"seed {seed}: {run['assignment']} power saving {sel.power_saving:.3f} test loss {100 * loss:+.2f} pp",
          flush=True)
    return run


if __name__ == "__main__":
    main()

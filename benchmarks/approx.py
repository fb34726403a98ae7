"""Approximate multipliers on LeNet-5 / MNIST (9k train, 1k validation, 10k test): accuracy vs MED of every
multiplier, emulation speed against the exact int8 fake-quantized model (interleaved runs, medians),
bit-exactness of the exact multiplier against the integer reference, and the greedy per-layer selection
at <= 0.5 pp.

The LeNet-5 is the project's baseline (the settings of benchmarks/baseline.py: SGD, lr 0.02, 20 epochs,
2-pixel shift augmentation, seed 0), reused from the training cache (``fit_cached``) when present.
The selection runs on the whole validation split with the paired confidence-margin acceptance rule of
``crosslayer.approx.select`` (loss + z * SE <= budget, one-sided 95 %), then the chosen assignment is
verified on the test images (all 10k by default); the selection never sees a test image.

    .venv/bin/python benchmarks/approx.py [--timing-limit N] [--sweep-limit N] [--final-limit N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from _common import BASELINE_RECIPES, write_results
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
from crosslayer.approx.select import accuracy_on, as_accuracy, correct_on
from crosslayer.data import load_splits
from crosslayer.models import build_model
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.train import TrainConfig, evaluate, fit_cached, predict, seed_everything

# benchmarks/baseline.py's mnist_lenet5 run (crosslayer train --epochs 20 --optimizer sgd --lr 0.02 --augment-shift 2)
TRAIN = TrainConfig(**BASELINE_RECIPES["lenet5"])  # benchmarks/baseline.py settings
BUDGET_PP = 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timing-limit", type=int, default=10000, help="test images timed (interleaved, medians)")
    ap.add_argument("--sweep-limit", type=int, default=10000, help="test images for the accuracy-vs-MED sweep")
    ap.add_argument("--select-limit", type=int, default=0, help="validation images used by the selection (0 = all)")
    ap.add_argument("--confidence", type=float, default=0.99, help="one-sided confidence of the acceptance rule")
    ap.add_argument("--final-limit", type=int, default=10000, help="test images for the selected assignment")
    ap.add_argument("--bitexact-limit", type=int, default=1000, help="test images checked against the reference")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-multiplier", default="drum4")
    args = ap.parse_args()

    data = load_splits("mnist", None, train_limit=10000, seed=0)
    seed_everything(0)  # as the flow does before building the model
    model = build_model("lenet5")
    trained = fit_cached("lenet5", model, data.train, data.val, TRAIN, seed=0, desc="lenet5")
    q = quantize_model(model.eval(), FixedPointSpec(bits=8), FixedPointSpec(bits=8))
    with calibrating(q):
        predict(q, data.train.images[:1000])
    q.eval()
    layers = ["conv1", "conv2", "fc1", "fc2"]
    out: dict[str, Any] = {"model": "lenet5", "train_images": len(data.train), "test_images": len(data.test),
                           "training": {**vars(TRAIN), "seed": 0, "cached": trained.cached,
                                        "best_val_accuracy": trained.best_val_accuracy},
                           "float_test_accuracy": evaluate(model, data.test).accuracy,
                           "settings": vars(args), "complete": False}
    exact = approximate_model(q, {n: "exact" for n in layers})
    timed = approximate_model(q, {n: args.timing_multiplier for n in layers})

    n_bx = min(args.bitexact_limit, len(data.test))
    imgs = data.test.images[:n_bx]
    out["exact_bitexact"] = torch.equal(predict(exact, imgs), predict(integer_reference_model(q), imgs))
    out["bitexact_images"] = n_bx
    sub = data.test.images[:50]
    out["approx_bitexact_50_images"] = torch.equal(predict(timed, sub), predict(
        integer_reference_model(q, {n: args.timing_multiplier for n in layers}), sub))
    write_results("approx", out)

    timing = data.test.subset(args.timing_limit)
    fq_t, emu_t = [], []
    for _ in range(args.repeats):  # interleaved
        t0 = time.perf_counter()
        predict(q, timing.images)
        fq_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        predict(timed, timing.images)
        emu_t.append(time.perf_counter() - t0)
    fq_s, emu_s = statistics.median(fq_t), statistics.median(emu_t)
    out.update({"emulation_images_per_s": len(timing) / emu_s, "exact_int8_fake_quant_images_per_s": len(timing) / fq_s,
                "slowdown_vs_exact_int8": emu_s / fq_s, "timing_images": len(timing),
                "timing_multiplier": args.timing_multiplier, "fake_quant_seconds": fq_t, "emulation_seconds": emu_t})
    write_results("approx", out)

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
    out.update({"multipliers": rows, "sweep_test_images": len(sweep)})
    write_results("approx", out)

    val = data.val.subset(args.select_limit) if args.select_limit else data.val
    score_val = correct_on(val)
    ref_val = score_val(exact)
    probe = [m for m in mults if m.name in ("mitchell", "trunc8")]
    probe_pts = per_layer_sweep(q, probe, score_val)
    ranking = sensitivity_ranking(probe_pts, as_accuracy(ref_val))
    macs = layer_macs(q, data.test.images[:1])
    sel = greedy_select(q, mults, ranking, score_val, budget_pp=BUDGET_PP, macs=macs, reference=ref_val,
                        single_layer={(p.layer, p.multiplier): p.accuracy for p in probe_pts},
                        confidence=args.confidence)
    chosen = approximate_model(q, {n: sel.assignment.get(n, "exact") for n in layers})
    final = data.test.subset(args.final_limit)
    score_final = correct_on(final)
    ok_sel, ok_exact = score_final(chosen), score_final(exact)
    acc_sel, acc_exact = as_accuracy(ok_sel), as_accuracy(ok_exact)
    loss_test, se_test = paired_loss(ok_exact, ok_sel)
    out.update({
        "exact_int8_test_accuracy": acc_exact, "fake_quant_test_accuracy": accuracy_on(final)(q),
        "selected_assignment": {n: m.name for n, m in sel.assignment.items()}, "ranking": ranking,
        "ranking_probe": [m.name for m in probe],
        "selected_power_saving": sel.power_saving, "selected_accuracy_loss_pp": 100 * (acc_exact - acc_sel),
        "selected_accuracy_loss_se_pp": 100 * se_test, "selected_test_accuracy": acc_sel,
        "final_test_images": len(final),
        "selection_on": f"validation ({len(val)} images)", "selection_rule": (
            f"accept if loss + z*SE <= {BUDGET_PP} pp (paired SE of the accuracy difference, one-sided "
            f"{args.confidence:.2f}, z = {statistics.NormalDist().inv_cdf(args.confidence):.3f})"),
        "selection_confidence": args.confidence, "selection_val_accuracy_exact": sel.reference_accuracy,
        "selection_val_loss_pp": sel.loss_pp, "selection_val_margin_pp": sel.margin_pp,
        "selection_val_loss_bound_pp": sel.loss_bound_pp, "selection_trace": sel.trace,
        "greedy_evaluations": sel.evaluations, "budget_pp": BUDGET_PP, "layer_macs": macs, "complete": True,
    })
    assert abs(100 * loss_test - out["selected_accuracy_loss_pp"]) < 1e-6
    write_results("approx", out)


if __name__ == "__main__":
    main()

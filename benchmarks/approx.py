"""Approximate multipliers on LeNet-5 / MNIST (9k train, 10k test): accuracy vs MED of every multiplier,
emulation speed against the exact int8 fake-quantized model (interleaved runs, medians), bit-exactness of
the exact multiplier against the integer reference, and the greedy per-layer selection at <= 0.5 pp.

    .venv/bin/python benchmarks/approx.py [--sweep-limit N] [--repeats R]
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

from _common import write_results
from crosslayer.approx import (
    approximate_model,
    greedy_select,
    integer_reference_model,
    layer_macs,
    library,
    per_layer_sweep,
    sensitivity_ranking,
    uniform_metrics,
)
from crosslayer.approx.select import accuracy_on
from crosslayer.data import load_splits
from crosslayer.models import build_model
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.train import TrainConfig, evaluate, fit_cached, predict

TRAIN = TrainConfig(epochs=4, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timing-limit", type=int, default=10000, help="test images timed (interleaved, medians)")
    ap.add_argument("--sweep-limit", type=int, default=10000, help="test images for the accuracy-vs-MED sweep")
    ap.add_argument("--select-limit", type=int, default=1000, help="validation images used by the selection")
    ap.add_argument("--final-limit", type=int, default=10000, help="test images for the selected assignment")
    ap.add_argument("--bitexact-limit", type=int, default=1000, help="test images checked against the reference")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-multiplier", default="drum4")
    args = ap.parse_args()

    data = load_splits("mnist", None, train_limit=10000, seed=0)
    model = build_model("lenet5")
    fit_cached("lenet5", model, data.train, data.val, TRAIN, seed=0, desc="lenet5")
    q = quantize_model(model.eval(), FixedPointSpec(bits=8), FixedPointSpec(bits=8))
    with calibrating(q):
        predict(q, data.train.images[:1000])
    q.eval()
    layers = ["conv1", "conv2", "fc1", "fc2"]
    out: dict[str, Any] = {"model": "lenet5", "train_images": len(data.train), "test_images": len(data.test),
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
        acc = score_test(approximate_model(q, {n: m for n in layers}))
        rows.append({"name": m.name, "med": met.med, "mred": met.mred, "wce": met.wce, "bias": met.bias,
                     "relative_power": m.relative_power, "accuracy": acc})
        print(f"{m.name:10s} MED {met.med:8.1f} acc {acc:.4f}", flush=True)
    out.update({"multipliers": rows, "sweep_test_images": len(sweep)})
    write_results("approx", out)

    val = data.val.subset(args.select_limit)
    score_val = accuracy_on(val)
    ref_val = score_val(exact)
    probe = [m for m in mults if m.name in ("mitchell", "trunc8")]
    ranking = sensitivity_ranking(per_layer_sweep(q, probe, score_val), ref_val)
    macs = layer_macs(q, data.test.images[:1])
    sel = greedy_select(q, mults, ranking, score_val, budget_pp=0.5, macs=macs, reference=ref_val)
    chosen = approximate_model(q, {n: sel.assignment.get(n, "exact") for n in layers})
    final = data.test.subset(args.final_limit)
    acc_sel, acc_exact = evaluate(chosen, final).accuracy, evaluate(exact, final).accuracy
    out.update({
        "exact_int8_test_accuracy": acc_exact, "fake_quant_test_accuracy": evaluate(q, final).accuracy,
        "selected_assignment": {n: m.name for n, m in sel.assignment.items()}, "ranking": ranking,
        "ranking_probe": [m.name for m in probe],
        "selected_power_saving": sel.power_saving, "selected_accuracy_loss_pp": 100 * (acc_exact - acc_sel),
        "selected_test_accuracy": acc_sel, "final_test_images": len(final),
        "selection_on": f"validation ({len(val)} images)", "selection_val_loss_pp": sel.loss_pp,
        "greedy_evaluations": sel.evaluations, "budget_pp": 0.5, "layer_macs": macs, "complete": True,
    })
    write_results("approx", out)


if __name__ == "__main__":
    main()

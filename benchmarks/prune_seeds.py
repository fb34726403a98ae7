"""How much the kept point of the LeNet-300-100 pruning schedule depends on the fine-tuning seed
-> benchmarks/results/prune_seeds.json.

Re-runs benchmarks/compression.py's LeNet-300-100 schedule (``compression.PRUNE["lenet300"]``) on the same
cached baseline with other fine-tuning seeds and records, per seed, the kept sparsity and every step's
validation and test loss. Only the pruning schedule runs (no quantization, no peers).

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_seeds.py [--model lenet300] [--seeds 0,1,2]
       [--targets T1,T2,..] [--out NAME]
``--seeds 0 --targets 0.5,0.7,0.8,0.85,0.88,0.9,0.92,0.94,0.95 --out prune_to95`` shows why the
LeNet-300-100 targets stop at 94 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import torch

from _common import baseline_model, write_results  # type: ignore[import-not-found]
from compression import BASELINES, PRUNE  # type: ignore[import-not-found]
from crosslayer.data import load_splits
from crosslayer.prune import IterativePruner
from crosslayer.train import evaluate, fit_cached


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet300", choices=sorted(PRUNE))
    ap.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds of the schedule")
    ap.add_argument("--targets", default="", help="replace the schedule's targets, e.g. 0.5,0.7,...,0.95")
    ap.add_argument("--out", default="prune_seeds", help="results name: benchmarks/results/<OUT>.json")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_splits("mnist", None, train_limit=10000, seed=0)  # the split of benchmarks/compression.py
    t_start = time.perf_counter()
    model = baseline_model(args.model, 0)
    fit = fit_cached(args.model, model, data.train, data.val, BASELINES[args.model], seed=0, desc="baseline")
    model.eval()
    base = evaluate(model, data.test).accuracy
    schedule = PRUNE[args.model]
    if args.targets:
        schedule = dataclasses.replace(schedule, targets=tuple(float(t) for t in args.targets.split(",")))
    runs: dict[str, Any] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        out = IterativePruner(model, data, schedule, seed=seed).run()
        runs[str(seed)] = {
            "kept_sparsity": out.kept["sparsity"], "kept_test_loss_pp": 100.0 * (base - out.kept["test_accuracy"]),
            "stop_reason": out.stop_reason, "seconds": time.perf_counter() - t0,
            "steps": [{k: h[k] for k in ("target", "val_loss_pp", "val_loss_se_pp", "val_loss_lower_pp",
                                         "test_loss_pp", "within_budget")} for h in out.history[1:]]}
        print(f"seed {seed}: kept {out.kept['sparsity']:.2f}, test loss {runs[str(seed)]['kept_test_loss_pp']:.2f} pp",
              flush=True)
    cfg = BASELINES[args.model]
    write_results(args.out, {
        "command": " ".join(["python benchmarks/prune_seeds.py", *sys.argv[1:]]), "model": args.model,
        "baseline_accuracy": base,
        "baseline_training": {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "seed": 0,
                              "best_val_epoch": fit.best_epoch, "val_accuracy": fit.best_val_accuracy,
                              "cached": fit.cached},
        "data": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "schedule_from": "benchmarks/compression.py PRUNE", "schedule": dataclasses.asdict(schedule),
        "targets": list(schedule.targets), "seeds": [int(s) for s in args.seeds.split(",")], "threads": args.threads,
        "runs": runs, "seconds": time.perf_counter() - t_start})


if __name__ == "__main__":
    main()

"""Baseline accuracy, training time and peak memory of the reference models, and `make demo` end to end.

    python benchmarks/baseline.py               # LeNet trainings + make demo on a fresh clone
    python benchmarks/baseline.py --skip-demo   # LeNet trainings only; demo_seconds kept from the last full run
    python benchmarks/baseline.py --only-demo   # make demo only; the trainings kept from the last run
    python benchmarks/baseline.py --pilot resnet20        # choose the ResNet-20 recipe on the validation split
    python benchmarks/baseline.py --zoo resnet20 --chunk-epochs 5   # train it (resumable), record it when done

Each LeNet training runs in its own process (`crosslayer train`), so its peak RSS is its own. The built-in
models beyond LeNet (ResNet-20, MobileNetV2) train on the full Fashion-MNIST split (54,000 train / 6,000
validation / 10,000 test) through the flow's own setup (``crosslayer.flow.build_context``: the same data
split, seeded initial weights and input normalisation as ``crosslayer flow``) and ``fit_cached``, so the
flow and every benchmark reuse the cached training; ``--chunk-epochs`` splits a long training into resumable
runs (each one command under the CPU lock), and the result is recorded once the last chunk ends. Their
recipes come from ``--pilot``: SGD (momentum 0.9, weight decay 5e-4, cosine schedule, batch 256) at
learning rates 0.05, 0.1 and 0.2, each trained from the same initial weights on 10,000 images of the
training split for 3 epochs and scored on the validation split; when the best rate is at an edge of the grid,
the grid is extended past that edge (halving or doubling, at most PILOT_MAX_EXTEND times) until the best rate
is inside it. The best learning rate, with the epoch count fixed by the time budget before any final run, is
BASELINE_RECIPES["<model>@fashion-mnist"] (the final keeps its best-validation epoch). The pilot is
resumable too (rows are written as they are measured). ``--seed`` trains a final from another seed (the
flow's seeded initial weights and data order); seed 0's training is the one the flow and the other
benchmarks reuse from the cache, other seeds are recorded under "<key>_seed<S>".
MobileNetV2 is the width-0.5 model (``mobilenetv2-0.5``), whose training costs about what ResNet-20's does.
Writes benchmarks/results/baseline.json (other entries kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, RESULTS, ROOT, SHARED_DATA, peak_rss_mb, write_results


def _cli_args(recipe: dict[str, object]) -> list[str]:
    return [a for k, v in recipe.items() for a in (f"--{k.replace('_', '-')}", str(v))]


# The recipes of _common.BASELINE_RECIPES, as `crosslayer train` options.
RUNS = {
    "mnist_lenet5": ["--model", "lenet5", "--dataset", "mnist", *_cli_args(BASELINE_RECIPES["lenet5"])],
    "mnist_lenet300": ["--model", "lenet300", "--dataset", "mnist", *_cli_args(BASELINE_RECIPES["lenet300"])],
    "fashion_lenet5": ["--model", "lenet5", "--dataset", "fashion-mnist", "--epochs", "15", "--optimizer", "sgd",
                       "--lr", "0.02"],
}


def _train(name: str, args: list[str], out: Path) -> dict[str, float]:
    """One training in a child process, timed, with the child's own peak RSS (GNU time-free: getrusage)."""
    code = (
        "import resource, sys, json\n"
        "from crosslayer.cli.main import app\n"
        "try:\n    app(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n    print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "train", *args, "--out", str(out), "--no-cache"],
                          capture_output=True, text=True, env={**os.environ, "CROSSLAYER_NO_PROGRESS": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    peak = float(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_MB")))
    m = json.loads((out / "metrics.json").read_text())["baseline"]
    return {"test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"], "params": m["params"],
            "train_seconds": m["train_seconds"], "process_seconds": wall, "peak_rss_mb": peak,
            "train_samples": m["train_samples"], "command": "crosslayer train " + " ".join(args)}


def _demo_seconds() -> float:
    """`make demo` on a fresh clone with ../shared beside it, venv creation included."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "p"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if SHARED_DATA.parent.is_dir():
            os.symlink(SHARED_DATA.parent, Path(tmp) / "shared")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CROSSLAYER_", "VIRTUAL_ENV"))}
        # An empty cache, as on a newcomer's machine: the baseline and the tiny detector are trained, not reused.
        env["CROSSLAYER_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        subprocess.run(["make", "demo"], cwd=clone, check=True, env=env)
        return time.perf_counter() - t0


# Built-in models beyond LeNet: result key -> (model, dataset); recipes in BASELINE_RECIPES["<model>@<dataset>"].
ZOO = {"fashion_resnet20": ("resnet20", "fashion-mnist"),
       "fashion_mobilenetv2": ("mobilenetv2-0.5", "fashion-mnist")}
PILOT_LRS = (0.05, 0.1, 0.2)
PILOT_MAX_EXTEND = 3
PILOT_TRAIN, PILOT_EPOCHS, PILOT_BATCH = 10_000, 3, 256
ZOO_WORK = ROOT / "benchmarks" / ".work" / "baseline_zoo"


def _zoo_key(name: str) -> str:
    for key, (model, _) in ZOO.items():
        if name in (key, model, model.split("-")[0]):
            return key
    raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(m for m, _ in ZOO.values())}")


def _zoo_context(key: str, seed: int = 0) -> Any:
    """The flow's own context for ZOO[key]: data splits, seeded model with its input normalisation."""
    from crosslayer.flow import FlowConfig, build_context

    model, dataset = ZOO[key]
    flow = FlowConfig(model=model, dataset=dataset, seed=seed, device="cpu", stages=("baseline",))
    return build_context(ZOO_WORK / (key if seed == 0 else f"{key}_seed{seed}") / "run", flow)


def _next_lr(rows: list[dict[str, Any]]) -> float | None:
    """The grid point to train next: an untried base rate, else one step past an edge holding the best rate.

    Returns None once the best rate lies strictly inside the grid (or the grid was extended
    PILOT_MAX_EXTEND times on that side): the pilot is then finished.
    """
    tried = sorted(r["lr"] for r in rows)
    for lr in PILOT_LRS:
        if lr not in tried:
            return lr
    best = max(rows, key=lambda r: (r["best_val_accuracy"], -r["lr"]))["lr"]
    if best == tried[0] and sum(lr < min(PILOT_LRS) for lr in tried) < PILOT_MAX_EXTEND:
        return round(best / 2, 6)
    if best == tried[-1] and sum(lr > max(PILOT_LRS) for lr in tried) < PILOT_MAX_EXTEND:
        return round(best * 2, 6)
    return None


def _pilot(key: str, before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every grid point trained from the same initial weights on PILOT_TRAIN images, scored on validation.

    Resumable: each grid point's row is written as soon as it is measured, and the rows of ``before`` (the
    last, possibly interrupted, pilot with the same settings) are kept rather than measured again. The choice
    is made once every grid point has a row.
    """
    import copy

    import torch

    from crosslayer.train import TrainConfig, fit

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    ctx = _zoo_context(key)
    init = copy.deepcopy(ctx.model.state_dict())
    sub = ctx.data.train.subset(PILOT_TRAIN)
    settings = {"train_images": len(sub), "val_images": len(ctx.data.val), "epochs": PILOT_EPOCHS,
                "batch_size": PILOT_BATCH, "augment_shift": 0}
    same = before is not None and all(before.get(k) == v for k, v in settings.items())
    rows = list(before["grid"]) if before is not None and same else []
    peak = before.get("peak_rss_mb", 0.0) if before is not None and same else 0.0
    record: dict[str, Any] = {}
    rule = ("highest best-epoch validation accuracy (ties: smaller lr); a best rate at an edge of the grid "
            f"extends the grid past it (x0.5 or x2, at most {PILOT_MAX_EXTEND} times per side)")
    while (lr := _next_lr(rows)) is not None:
        ctx.model.load_state_dict(init)
        cfg = TrainConfig(epochs=PILOT_EPOCHS, batch_size=PILOT_BATCH, lr=lr)
        res = fit(ctx.model, sub, ctx.data.val, cfg, seed=0, desc=f"pilot lr {lr}")
        rows.append({"lr": lr, "best_val_accuracy": res.best_val_accuracy, "best_epoch": res.best_epoch,
                     "seconds": res.train_seconds})
        print(json.dumps(rows[-1]), flush=True)
        rows.sort(key=lambda r: r["lr"])
        record = {**settings, "grid": rows, "rule": rule, "peak_rss_mb": max(peak, peak_rss_mb())}
        _merge({f"pilot_{key}": record})
    best = max(rows, key=lambda r: (r["best_val_accuracy"], -r["lr"]))
    return {**settings, "grid": rows, "rule": rule, "peak_rss_mb": max(peak, peak_rss_mb()),
            "chosen": {"lr": best["lr"]}}


def _zoo_train(key: str, chunk_epochs: int | None, pilot: dict[str, Any] | None,
               seed: int = 0) -> dict[str, Any] | None:
    """Train ZOO[key] with its recipe from ``seed`` (at most ``chunk_epochs`` more epochs); its record once done."""
    import torch

    from crosslayer.train import TrainConfig, evaluate, fit_cached

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model, dataset = ZOO[key]
    recipe = BASELINE_RECIPES[f"{model}@{dataset}"]
    if pilot is None or "chosen" not in pilot:
        raise SystemExit(f"no finished pilot for {key} in baseline.json; run --pilot {model} first")
    if {k: recipe[k] for k in pilot["chosen"]} != pilot["chosen"]:
        raise SystemExit(f"BASELINE_RECIPES[{model}@{dataset}] {recipe} differs from the pilot's choice "
                         f"{pilot['chosen']}; run --pilot again or fix the recipe")
    ctx = _zoo_context(key, seed)
    t0 = time.perf_counter()
    res = fit_cached(model, ctx.model, ctx.data.train, ctx.data.val, TrainConfig(**recipe), seed=seed,
                     desc=f"{model} on {dataset}", max_epochs=chunk_epochs)
    chunks_file = ZOO_WORK / (key if seed == 0 else f"{key}_seed{seed}") / f"chunks_{_recipe_tag(recipe)}.json"
    chunks = json.loads(chunks_file.read_text()) if chunks_file.is_file() else []
    if not res.cached:
        chunks.append({"epochs_done": len(res.history), "process_seconds": time.perf_counter() - t0,
                       "peak_rss_mb": peak_rss_mb()})
        chunks_file.parent.mkdir(parents=True, exist_ok=True)
        chunks_file.write_text(json.dumps(chunks))
    if not res.finished:
        print(f"{key}: {len(res.history)} of {recipe['epochs']} epochs done; run again to continue", flush=True)
        return None
    test, val = evaluate(ctx.model, ctx.data.test), evaluate(ctx.model, ctx.data.val)
    from crosslayer.models import count_params

    return {"test_accuracy": test.accuracy, "val_accuracy": val.accuracy, "params": count_params(ctx.model),
            "train_seconds": res.train_seconds, "best_epoch": res.best_epoch,
            "history": [{k: h[k] for k in ("epoch", "train_loss", "val_accuracy")} for h in res.history],
            "peak_rss_mb": max([c["peak_rss_mb"] for c in chunks] + [peak_rss_mb()]),
            "chunks": chunks, "reused_cache": res.cached, "train_samples": len(ctx.data.train),
            "val_samples": len(ctx.data.val), "test_samples": len(ctx.data.test), "recipe": recipe,
            "recipe_key": f"{model}@{dataset}", "seed": seed,
            "threads": torch.get_num_threads(),
            "command": f"python benchmarks/baseline.py --zoo {model} --seed {seed} "
                       "[--chunk-epochs N, repeated until done]"}


def _recipe_tag(recipe: dict[str, Any]) -> str:
    """A short file-name tag for a recipe, so chunks of different recipes are never mixed."""
    return "_".join(f"{k}{v}" for k, v in sorted(recipe.items()))


def _merge(entries: dict[str, Any]) -> None:
    previous = RESULTS / "baseline.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    old.pop("machine", None)
    write_results("baseline", {**old, **entries})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--skip-demo", action="store_true", help="do not time make demo; keep the previous figure")
    group.add_argument("--only-demo", action="store_true", help="only time make demo; keep the previous trainings")
    group.add_argument("--pilot", metavar="MODEL", help="choose MODEL's recipe on the validation split (resnet20, "
                                                         "mobilenetv2)")
    group.add_argument("--zoo", metavar="MODEL", help="train MODEL on Fashion-MNIST with its recipe and record it")
    ap.add_argument("--chunk-epochs", type=int, default=None, help="with --zoo: train at most this many more epochs")
    ap.add_argument("--seed", type=int, default=0, help="with --zoo: the training's seed (0: the cached baseline "
                                                        "every benchmark reuses)")
    opts = ap.parse_args()
    previous = RESULTS / "baseline.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    if opts.pilot:
        key = _zoo_key(opts.pilot)
        _merge({f"pilot_{key}": _pilot(key, old.get(f"pilot_{key}"))})
        return
    if opts.zoo:
        key = _zoo_key(opts.zoo)
        record = _zoo_train(key, opts.chunk_epochs, old.get(f"pilot_{key}"), opts.seed)
        if record is not None:
            _merge({key if opts.seed == 0 else f"{key}_seed{opts.seed}": record})
        return
    results: dict[str, object] = {}
    if opts.only_demo:
        results.update({k: v for k, v in old.items() if k in RUNS})
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for name, args in RUNS.items():
                print(f"training {name} ...", flush=True)
                results[name] = _train(name, args, Path(tmp) / name)
                print(json.dumps(results[name]), flush=True)
    if opts.skip_demo:
        results["demo_seconds"] = old.get("demo_seconds")
        results["demo_seconds_note"] = "kept from the previous full run (--skip-demo)"
    else:
        results["demo_seconds"] = _demo_seconds()
        results["demo_seconds_note"] = ("make demo on a fresh clone with an empty model cache, venv creation and "
                                        "torch install included")
    kept = {k: v for k, v in old.items() if k.split("_seed")[0] in ZOO or k.startswith("pilot_")}
    write_results("baseline", {**results, **kept})
    shutil.rmtree(ROOT / "benchmarks" / ".work" / "baseline", ignore_errors=True)


if __name__ == "__main__":
    main()

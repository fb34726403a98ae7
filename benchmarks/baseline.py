"""Baseline accuracy, training time and peak memory of the reference models, and `make demo` end to end.

    python benchmarks/baseline.py               # everything (trainings + make demo on a fresh clone)
    python benchmarks/baseline.py --skip-demo   # trainings only; demo_seconds kept from the last full run
    python benchmarks/baseline.py --only-demo   # make demo only; the trainings kept from the last run

Each training runs in its own process (`crosslayer train`), so its peak RSS is its own.
Writes benchmarks/results/baseline.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, RESULTS, ROOT, SHARED_DATA, write_results


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--skip-demo", action="store_true", help="do not time make demo; keep the previous figure")
    group.add_argument("--only-demo", action="store_true", help="only time make demo; keep the previous trainings")
    opts = ap.parse_args()
    previous = RESULTS / "baseline.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
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
    write_results("baseline", results)
    shutil.rmtree(ROOT / "benchmarks" / ".work" / "baseline", ignore_errors=True)


if __name__ == "__main__":
    main()

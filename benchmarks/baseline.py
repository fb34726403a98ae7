"""Baseline accuracy, training time and peak memory of the reference models, and `make demo` end to end.

    python benchmarks/baseline.py               # everything (trainings + make demo on a fresh clone)
    python benchmarks/baseline.py --skip-demo   # trainings only; demo_seconds kept from the last full run

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
from _common import RESULTS, ROOT, SHARED_DATA, write_results

# The settings the README quotes; the 10k MNIST subset needs shift augmentation to pass 98.5 %.
RUNS = {
    "mnist_lenet5": ["--model", "lenet5", "--dataset", "mnist", "--epochs", "20", "--optimizer", "sgd",
                     "--lr", "0.02", "--augment-shift", "2"],
    "mnist_lenet300": ["--model", "lenet300", "--dataset", "mnist", "--epochs", "30", "--optimizer", "sgd",
                       "--lr", "0.05", "--augment-shift", "2"],
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
        t0 = time.perf_counter()
        subprocess.run(["make", "demo"], cwd=clone, check=True, env=env)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-demo", action="store_true", help="do not time make demo; keep the previous figure")
    opts = ap.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in RUNS.items():
            print(f"training {name} ...", flush=True)
            results[name] = _train(name, args, Path(tmp) / name)
            print(json.dumps(results[name]), flush=True)
    previous = RESULTS / "baseline.json"
    if opts.skip_demo:
        old = json.loads(previous.read_text()) if previous.is_file() else {}
        results["demo_seconds"] = old.get("demo_seconds")
        results["demo_seconds_note"] = "kept from the previous full run (--skip-demo)"
    else:
        results["demo_seconds"] = _demo_seconds()
        results["demo_seconds_note"] = "make demo on a fresh clone, venv creation and torch install included"
    write_results("baseline", results)
    shutil.rmtree(ROOT / "benchmarks" / ".work" / "baseline", ignore_errors=True)


if __name__ == "__main__":
    main()

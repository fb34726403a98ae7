"""Speed of this checkout against an earlier revision, side by side: what a code change itself gained, apart from
the machine's load (a stored figure of another day cannot tell the two apart).

The revision is checked out as a detached git worktree under benchmarks/.work/rev-<sha>; every measurement runs
in a fresh process that imports ``crosslayer`` from one tree (its ``src`` first on ``sys.path``, checked), the
two trees alternate in every round (the order flips from round to round), and medians over the rounds are
reported with every raw round kept.

- ``costmodel``: ``speed_section(1)`` of each tree's own benchmarks/hardware.py (full layer costs per second:
  search, cold, warm; MNIST-model layers and AlexNet, Eyeriss and TPU-like, the minimum over the presets as in
  hardware.json).
- ``emulation``: approximate-multiplier emulation against the fake-quantized model, each model built with seeded
  random weights and calibrated on seeded random 28 x 28 inputs (speed only), 300 images, two timed passes after
  a warm-up, ``--threads`` torch threads; slowdown = emulation time / fake-quant time of the same process.

    .venv/bin/python benchmarks/revisions.py --base f78f8ac --what costmodel
    .venv/bin/python benchmarks/revisions.py --base 9d610b2 --what emulation [--rounds 3] [--threads 2]

Writes benchmarks/results/revisions_<what>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, WORK, write_results

MODELS = ("lenet5", "resnet20", "mobilenetv2-0.5")
MULTIPLIERS = ("trunc4", "bam_h2_v6", "kulkarni", "drum4", "etm3", "mitchell")

_PRELUDE = """
import json, sys, time
tree = sys.argv[1]
sys.path[:0] = [tree + "/src", tree + "/benchmarks"]
import torch
import crosslayer
assert crosslayer.__file__.startswith(tree), crosslayer.__file__
"""

_COSTMODEL = """
import hardware
r = hardware.speed_section(1)
print("RESULT " + json.dumps({k: r[k] for k in ("full_layer_costs_per_second_search",
      "full_layer_costs_per_second_search_alexnet", "full_layer_costs_per_second_cold",
      "full_layer_costs_per_second_warm")}))
"""

_EMULATION = """
import copy
threads, models, mults = int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4].split(",")
torch.set_num_threads(threads)
from crosslayer.models import build_model
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.approx import approximate_model, approximable_layers
out = {}
for name in models:
    torch.manual_seed(0)
    q = quantize_model(copy.deepcopy(build_model(name).eval()), FixedPointSpec(bits=8), FixedPointSpec(bits=8))
    x = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with calibrating(q):
        q(x)
    q.eval()
    layers = approximable_layers(q)

    def timed(run):
        run(x)
        t0 = time.perf_counter()
        run(x)
        run(x)
        return (time.perf_counter() - t0) / 2

    with torch.no_grad():
        fake = timed(q)
        out[name] = {"fake_quant_seconds": fake, **{m: timed(approximate_model(q, {n: m for n in layers}).eval()) / fake
                                                   for m in mults}}
print("RESULT " + json.dumps(out))
"""


def worktree(ref: str) -> tuple[Path, str]:
    """A detached worktree of ``ref`` under benchmarks/.work (made once) and its full commit id."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    path = WORK / f"rev-{sha[:12]}"
    if not (path / "src" / "crosslayer").is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(path), sha], cwd=ROOT, check=True,
                       capture_output=True)
    return path, sha


def measure(tree: Path, code: str, args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_PRELUDE + code), str(tree), *args],
                          capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"measurement in {tree} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(line[7:]))


def _medians(rounds: list[dict[str, Any]]) -> Any:
    first = rounds[0]
    if isinstance(first, dict):
        return {k: _medians([r[k] for r in rounds]) for k in first}
    return statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare this checkout with")
    ap.add_argument("--what", choices=("costmodel", "emulation"), required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="emulation: torch threads")
    args = ap.parse_args()
    base, sha = worktree(args.base)
    trees = {"base": base, "this": ROOT}
    code = _COSTMODEL if args.what == "costmodel" else _EMULATION
    extra = [] if args.what == "costmodel" else [str(args.threads), ",".join(MODELS), ",".join(MULTIPLIERS)]
    raw: dict[str, list[dict[str, Any]]] = {"base": [], "this": []}
    for r in range(args.rounds):
        for side in (("base", "this") if r % 2 == 0 else ("this", "base")):
            raw[side].append(measure(trees[side], code, extra))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {side: _medians(rounds) for side, rounds in raw.items()}
    out: dict[str, Any] = {"what": args.what, "base": {"ref": args.base, "commit": sha}, "rounds": args.rounds,
                           "command": "python benchmarks/revisions.py " + " ".join(sys.argv[1:]),
                           "medians": med, "raw_rounds": raw}
    if args.what == "costmodel":
        out["ratio_this_over_base"] = {k: med["this"][k] / med["base"][k] for k in med["this"]}
    else:
        out["threads"] = args.threads
        out["note"] = "values per model: fake-quant seconds for 300 images, and each multiplier's slowdown over it"
    write_results(f"revisions_{args.what}", out)


if __name__ == "__main__":
    main()

"""Single-bit-flip weight fault injection: crosslayer.resilience side by side with PyTorchFI, with the faults
stratified over every layer.

Model: the project's LeNet-5 baseline (BASELINE_RECIPES["lenet5"], trained once with crosslayer.train on 9k
MNIST images and reused from the training cache); every fault is evaluated over the full 10k MNIST test set.
Faults are single bit flips of float32 weights, drawn (seeded) uniformly over the (weight, bit) sites of each
layer, in two stratified campaigns:

- ``equal``: the same number of faults in every layer (``--per-layer``), so early layers, where re-running the
  rest of the network costs most, weigh as much as the large fully connected layer;
- ``size``: ``--total`` faults allocated to the layers in proportion to their number of weights (largest
  remainders, at least one per layer).

PyTorchFI (pip ``pytorchfi``, its own venv under benchmarks/.work/) runs in a persistent subprocess and injects
each fault with ``declare_weight_fi(function=...)`` (a deep copy of the model per fault, its documented weight
path), the bit flip computed there independently with ``struct``. Like with like: both sides evaluate the same
fault list on the same 10k images with the same number of torch threads, and every fault's correct count is
compared. Each campaign is split into ``--rounds`` stratified shares; in round r ours evaluates share r (one call
of the campaign engine, its clean pass included), then each layer's part of the share again on its own (its own
clean pass), then PyTorchFI evaluates the same faults, timing each. Overall speed-up = PyTorchFI seconds / ours
seconds over all rounds (and the median of the per-round ratios); per layer = PyTorchFI seconds of the layer's
faults / ours seconds of the per-layer calls. Peak resident memory of each side's evaluation is recorded next to
its time (``/proc`` high-water mark reset before each evaluation). ``--ours-only-faults`` (default 2400) also
times ours alone on a full statistical campaign (uniform over all sites, as ``crosslayer faults`` runs it).

    .venv/bin/python benchmarks/resilience.py [--per-layer 80] [--total 320] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from _common import (
    BASELINE_RECIPES,
    WORK,
    machine_info,
    merge_results,
    peer_venv,
    reset_peak_rss,
    rss_mb,
    shared_mnist_baseline,
    window_peak_rss_mb,
)

PEER_SCRIPT = r'''
import json, struct, sys, time
from pathlib import Path
import torch
from torch import nn
from pytorchfi.core import fault_injection


class LeNet5(nn.Module):  # the same architecture and parameter names as crosslayer.models.LeNet5
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(800, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu(self.fc1(x)))


def flip(bit):
    def fn(weight, idx):
        u = struct.unpack("<I", struct.pack("<f", weight[idx].item()))[0] ^ (1 << bit)
        return struct.unpack("<f", struct.pack("<I", u))[0]
    return fn


def correct(model, x, y):
    with torch.inference_mode():
        return sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))


def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


torch.set_num_threads(int(sys.argv[3]))
if sys.argv[4] == "lenet5":
    model = LeNet5()
else:  # the project's model class (plain torch modules), so PyTorchFI hooks the very same layers
    sys.path.insert(0, sys.argv[5])
    from crosslayer.models import build_model
    model = build_model(sys.argv[4])
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
model.eval()
data = torch.load(sys.argv[2], weights_only=True)
x, y = data["images"], data["labels"]
pfi = fault_injection(model, 1000, input_shape=list(x.shape[1:]), layer_types=[nn.Conv2d, nn.Linear])
print(json.dumps({"clean": correct(model, x, y)}), flush=True)
for line in sys.stdin:
    faults = json.loads(line)
    counts, seconds = [], []
    rss0 = status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    for layer, k, c, kh, kw, bit in faults:
        t0 = time.perf_counter()
        bad = pfi.declare_weight_fi(layer_num=[layer], k=[k], dim1=[c], dim2=[kh], dim3=[kw], function=flip(bit))
        bad.eval()
        counts.append(correct(bad, x, y))
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"counts": counts, "seconds": seconds, "peak_rss_mb": status("VmHWM"), "rss_mb": rss0}),
          flush=True)
'''
def weight_layers(model: torch.nn.Module) -> list[str]:
    """The Conv2d / Linear layers in ``model.modules()`` order: PyTorchFI's ``layer_num`` numbering."""
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def _trained_resnet20(path: Path) -> tuple[torch.nn.Module, Any]:
    """The shared ResNet-20 Fashion-MNIST baseline (benchmarks/zoo_compress.py's, from the training cache) and
    its test split; its state dict is saved at ``path`` for PyTorchFI's side."""
    import zoo_compress
    from crosslayer.fileio import save_torch

    ctx = zoo_compress.context()
    model = zoo_compress.ready_baseline(ctx)
    save_torch(path, model.state_dict())
    return model, ctx.data.test


def _trained_lenet5(path: Path) -> torch.nn.Module:
    """The shared LeNet-5 baseline; its state dict is saved at ``path`` for PyTorchFI's side."""
    from crosslayer.fileio import save_torch

    _, model, _ = shared_mnist_baseline("lenet5")
    save_torch(path, model.state_dict())
    return model


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """``total`` faults in proportion to ``sizes`` (largest remainders), at least one per layer."""
    whole = sum(sizes.values())
    quota = {n: total * s / whole for n, s in sizes.items()}
    out = {n: max(1, int(q)) for n, q in quota.items()}
    for n in sorted(sizes, key=lambda n: quota[n] - int(quota[n]), reverse=True):
        if sum(out.values()) >= total:
            break
        out[n] += 1
    while sum(out.values()) > total:  # the minimum of one pushed the sum over: take from the largest share
        big = max(out, key=lambda n: out[n])
        out[big] -= 1
    return out


def _draw(lw: Any, per_layer: dict[str, int], gen: torch.Generator) -> dict[str, list[tuple[int, int]]]:
    from crosslayer.resilience import random_fault_sites

    out = {}
    for name, n in per_layer.items():
        w = lw[name]
        idx, bit = random_fault_sites(w.weight.numel(), w.fmt, n, gen)
        out[name] = list(zip(idx.tolist(), bit.tolist(), strict=True))
    return out


def _sites(faults: dict[str, list[tuple[int, int]]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: (torch.tensor([i for i, _ in f]), torch.tensor([b for _, b in f])) for n, f in faults.items() if f}


def _peer_fault(layers: list[str], name: str, shape: tuple[int, ...], index: int, bit: int) -> list[int | None]:
    pos = [int(v) for v in torch.unravel_index(torch.tensor(index), shape)]
    return [layers.index(name), *pos, *([None] * (4 - len(pos))), bit]


def _ours(model: torch.nn.Module, lw: Any, sites: dict[str, tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
          y: torch.Tensor) -> tuple[dict[str, list[int]], float, dict[str, float], float, float]:
    """Our campaign engine on ``sites``: correct counts per fault, seconds, the seconds of the shared clean pass and
    of each layer's faults, peak resident MiB during the call and its rise over the start."""
    from crosslayer.resilience.batched import campaign_correct_counts

    rss0 = rss_mb()
    reset_peak_rss()
    t0 = time.perf_counter()
    faults = {n: (i, lw[n].faulty_values(i, b)) for n, (i, b) in sites.items()}  # part of the timed work
    parts: dict[str, float] = {}
    _, counts = campaign_correct_counts(model, faults, x, y, timings=parts)
    dt = time.perf_counter() - t0
    peak = window_peak_rss_mb()
    return {n: c.tolist() for n, c in counts.items()}, dt, parts, peak, peak - rss0


def campaign(kind: str, faults: dict[str, list[tuple[int, int]]], args: argparse.Namespace, model: torch.nn.Module,
             lw: Any, x: torch.Tensor, y: torch.Tensor, peer: subprocess.Popen[str]) -> dict[str, Any]:
    """One stratified campaign, interleaved with PyTorchFI round by round."""
    assert peer.stdin is not None and peer.stdout is not None
    shares: list[dict[str, list[tuple[int, int]]]] = [{} for _ in range(args.rounds)]
    for name, f in faults.items():  # each layer's faults dealt over the rounds
        for r in range(args.rounds):
            shares[r][name] = f[r::args.rounds]
    rounds, mismatches = [], []
    layer_fault_s = dict.fromkeys(faults, 0.0)
    layer_clean_s = dict.fromkeys(faults, 0.0)
    layer_peer_s = dict.fromkeys(faults, 0.0)
    for r, share in enumerate(shares):
        sites = _sites(share)
        if not sites:
            continue
        counts, dt, parts, peak, rise = _ours(model, lw, sites, x, y)
        n_share = sum(int(i.numel()) for i, _ in sites.values())
        listed = [(name, i, b) for name, f in share.items() for i, b in f]
        peer.stdin.write(json.dumps([_peer_fault(list(lw), name, tuple(lw[name].weight.shape), i, b)
                                     for name, i, b in listed]) + "\n")
        peer.stdin.flush()
        reply = json.loads(peer.stdout.readline())
        seen = dict.fromkeys(share, 0)
        for (name, i, b), c, sec in zip(listed, reply["counts"], reply["seconds"], strict=True):
            ours_count = counts[name][seen[name]]
            seen[name] += 1
            layer_peer_s[name] += sec
            if ours_count != c:
                mismatches.append({"layer": name, "index": i, "bit": b, "ours": ours_count, "pytorchfi": c})
        for name, (i, _) in sites.items():  # the shared clean pass, attributed in proportion to the faults
            layer_fault_s[name] += parts.get(name, 0.0)
            layer_clean_s[name] += (dt - sum(parts.get(k, 0.0) for k in sites)) * int(i.numel()) / n_share
        peer_s = sum(reply["seconds"])
        rounds.append({"faults": n_share, "ours_seconds": dt, "ours_parts_seconds": parts, "ours_peak_rss_mb": peak,
                       "ours_working_mb": rise, "pytorchfi_seconds": peer_s,
                       "pytorchfi_peak_rss_mb": reply["peak_rss_mb"],
                       "pytorchfi_working_mb": reply["peak_rss_mb"] - reply["rss_mb"], "speedup": peer_s / dt})
        print(f"{kind} round {r + 1}: {n_share} faults, ours {dt:.2f} s, PyTorchFI {peer_s:.1f} s "
              f"({peer_s / dt:.1f}x), mismatches so far {len(mismatches)}", flush=True)
    ours_total = sum(e["ours_seconds"] for e in rounds)
    peer_total = sum(e["pytorchfi_seconds"] for e in rounds)
    n = sum(e["faults"] for e in rounds)
    per_layer = {}
    for k in faults:
        if not faults[k]:
            continue
        ours_k = layer_fault_s[k] + layer_clean_s[k]
        per_layer[k] = {"faults": len(faults[k]), "pytorchfi_seconds": layer_peer_s[k],
                        "ours_fault_seconds": layer_fault_s[k], "ours_clean_pass_share_seconds": layer_clean_s[k],
                        "speedup": layer_peer_s[k] / ours_k,
                        "speedup_excluding_clean_pass": layer_peer_s[k] / max(layer_fault_s[k], 1e-9)}
    return {
        "faults": n, "faults_per_layer": {k: len(v) for k, v in faults.items()},
        "speedup": peer_total / ours_total, "speedup_median_of_rounds": statistics.median(e["speedup"] for e in rounds),
        "ours_seconds": ours_total, "pytorchfi_seconds": peer_total,
        "ours_faults_per_s": n / ours_total, "pytorchfi_faults_per_s": n / peer_total, "per_layer": per_layer,
        "per_layer_note": "ours per layer = its faults' seconds plus the shared clean pass (recording, certificates' "
                          "set-up, everything outside the layers' fault evaluation) in proportion to its faults",
        "ours_peak_rss_mb": max(e["ours_peak_rss_mb"] for e in rounds),
        "ours_working_mb": max(e["ours_working_mb"] for e in rounds),
        "pytorchfi_peak_rss_mb": max(e["pytorchfi_peak_rss_mb"] for e in rounds),
        "pytorchfi_working_mb": max(e["pytorchfi_working_mb"] for e in rounds),
        "compared_faults": n, "mismatched_faults": len(mismatches), "mismatches": mismatches[:20], "rounds": rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-layer", type=int, default=80, help="faults per layer of the 'equal' campaign")
    ap.add_argument("--total", type=int, default=320, help="faults of the 'size' campaign")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per campaign (stratified shares)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    ap.add_argument("--ours-only-faults", type=int, default=2400, help="ours alone on a full campaign (0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-limit", type=int, default=0, help="test images (0 = all 10k; fewer for a smoke run)")
    ap.add_argument("--model", choices=("lenet5", "resnet20"), default="lenet5",
                    help="lenet5 (MNIST; the file's top level) or resnet20 (Fashion-MNIST; its 'resnet20' section)")
    args = ap.parse_args()

    from crosslayer.data import load_dataset
    from crosslayer.resilience.batched import correct_counts
    from crosslayer.resilience.campaign import evaluate_sites, sample_sites
    from crosslayer.resilience.inject import stored_weights

    torch.set_num_threads(args.threads)
    py = peer_venv("pytorchfi", ["torch==2.13.0", "numpy"])
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "pytorchfi==0.6.0"], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    tag = args.model
    weights, data_file = WORK / f"resilience_{tag}.pt", WORK / f"resilience_{tag}_test.pt"
    script = WORK / "resilience_peer.py"
    if args.model == "lenet5":
        model, test = _trained_lenet5(weights), load_dataset("mnist", "test")
    else:
        model, test = _trained_resnet20(weights)
    if args.test_limit:
        test = test.subset(args.test_limit)
    torch.save({"images": test.images, "labels": test.labels}, data_file)
    script.write_text(PEER_SCRIPT)
    x, y = test.images, test.labels
    peer = subprocess.Popen([str(py), str(script), str(weights), str(data_file), str(args.threads), args.model,
                             str(Path(__file__).resolve().parents[1] / "src")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert peer.stdin is not None and peer.stdout is not None
    peer_clean = json.loads(peer.stdout.readline())["clean"]
    gen = torch.Generator().manual_seed(args.seed)
    cmd = "python benchmarks/resilience.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    out: dict[str, Any] = {
        "model": ("lenet5 (BASELINE_RECIPES['lenet5'], cached training)" if args.model == "lenet5" else
                  "resnet20 on Fashion-MNIST (BASELINE_RECIPES['resnet20@fashion-mnist'], seed 0, the shared "
                  "cached baseline; PyTorchFI's side builds the same class from the project's src)"),
        "command": cmd,
        "baseline_training": {**BASELINE_RECIPES["lenet5" if args.model == "lenet5" else "resnet20@fashion-mnist"],
                              "seed": 0, "source": "training cache (fit_cached), the benchmarks' shared baseline"},
        "fault_model": "single bit flip of a float32 weight, uniform over the (weight, bit) sites of its layer",
        "comparison": f"the same fault list on both sides, same {len(y):,} test images, same torch threads; every "
                      "fault's correct count compared",
        "test_images": len(y), "threads": args.threads, "rounds": args.rounds, "pytorchfi_version": "0.6.0"}

    def save() -> None:
        if args.model == "lenet5":
            merge_results("resilience", {**out, "models_not_run": {}})
        else:
            merge_results("resilience", {"resnet20": {**out, "machine": machine_info()}})

    with stored_weights(model, weight_layers(model), representation="float32") as lw:
        base = correct_counts(model, x, y)
        assert base == peer_clean, f"clean accuracy differs: ours {base}, PyTorchFI {peer_clean}"
        out["clean_accuracy"] = base / len(y)
        # Warm-up, untimed: one call of the campaign engine (one fault per layer, 64 images) builds its plan,
        # kernels and allocator pools, as PyTorchFI's clean pass above warms its side; without it the first
        # round alone paid those one-time costs (LeNet-5: 3.99 s against 2.3-2.8 s for the other rounds).
        _ours(model, lw, _sites(_draw(lw, dict.fromkeys(lw, 1), torch.Generator().manual_seed(args.seed + 2))),
              x[:64], y[:64])
        out["warmup"] = "one untimed call of ours (one fault per layer, 64 images) before the timed rounds"
        sizes = {n: lw[n].weight.numel() for n in lw}
        plans = {"equal": dict.fromkeys(lw, args.per_layer), "size": allocate(sizes, args.total)}
        for kind, per_layer in plans.items():
            out[kind] = campaign(kind, _draw(lw, per_layer, gen), args, model, lw, x, y, peer)
            save()
        peer.stdin.close()
        peer.wait(timeout=60)
        if args.ours_only_faults:
            big = sample_sites(lw, args.ours_only_faults, None, torch.Generator().manual_seed(args.seed + 1))
            rss0 = rss_mb()
            reset_peak_rss()
            t0 = time.perf_counter()
            recs = evaluate_sites(model, lw, big, x, y, base)
            dt = time.perf_counter() - t0
            out["ours_only_campaign"] = {
                "faults": len(recs), "seconds": dt, "injections_per_s": len(recs) / dt,
                "peak_rss_mb": window_peak_rss_mb(), "working_mb": window_peak_rss_mb() - rss0,
                "faults_per_layer": {n: int(i.numel()) for n, (i, _) in big.items()},
                "note": "ours alone on a full statistical campaign (uniform over all sites); not part of the speed-up"}
            print(f"ours alone: {len(recs)} faults in {dt:.1f} s ({len(recs) / dt:.1f}/s)", flush=True)
    save()


if __name__ == "__main__":
    main()

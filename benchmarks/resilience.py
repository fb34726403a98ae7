"""Single-bit-flip weight fault injection: crosslayer.resilience side by side with PyTorchFI.

Same LeNet-5 (trained with crosslayer.train on 9k MNIST images, state dict saved), same campaign:
single bit flips of float32 weights drawn uniformly over every (weight, bit) of the four layers
(statistical fault injection), each fault evaluated over the full 10k MNIST test set.
PyTorchFI (pip ``pytorchfi``, its own venv under benchmarks/.work/) runs in a persistent subprocess
and injects each fault with ``declare_weight_fi(function=...)`` (a deep copy of the model per fault,
its documented weight-injection path), the bit flip computed there independently with ``struct``.

Like with like: both sides evaluate the *same* fault list (``--faults`` single bit flips, drawn once),
over the same 10k test images, with the same number of torch threads. The list is split into
``--rounds`` equal shares; in round r ours evaluates share r (one call of the campaign engine, its clean
activation pass included in the time), then PyTorchFI evaluates exactly the same faults. Rates are
faults per second per side, medians over rounds; ``speedup`` is their ratio. Ours evaluates many faults
per forward pass and recomputes only the layers after each faulty one; that is how it is faster on the
same faults. Accuracy drops are compared fault by fault on every fault.

``--ours-only-faults`` (default 2400, Leveugle's n for e = 2 %, 95 %) additionally times ours alone on a
full statistical campaign; it is reported separately and not part of the speedup.

    .venv/bin/python benchmarks/resilience.py [--faults 90] [--rounds 3] [--threads 1] [--ours-only-faults 2400]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from _common import WORK, peer_venv, write_results

PEER_SCRIPT = r'''
import json, struct, sys, time
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


torch.set_num_threads(int(sys.argv[3]))
model = LeNet5()
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
model.eval()
data = torch.load(sys.argv[2], weights_only=True)
x, y = data["images"], data["labels"]
pfi = fault_injection(model, 1000, input_shape=[1, 28, 28], layer_types=[nn.Conv2d, nn.Linear])
print(json.dumps({"clean": correct(model, x, y)}), flush=True)
for line in sys.stdin:
    faults = json.loads(line)
    counts = []
    t0 = time.perf_counter()
    for layer, k, c, kh, kw, bit in faults:
        bad = pfi.declare_weight_fi(layer_num=[layer], k=[k], dim1=[c], dim2=[kh], dim3=[kw], function=flip(bit))
        bad.eval()
        counts.append(correct(bad, x, y))
    print(json.dumps({"counts": counts, "seconds": time.perf_counter() - t0}), flush=True)
'''


def _trained_lenet5(path: Path) -> torch.nn.Module:
    from crosslayer.data import load_splits
    from crosslayer.fileio import save_torch
    from crosslayer.models import build_model
    from crosslayer.train import TrainConfig, fit_cached

    splits = load_splits("mnist", None, train_limit=10000, seed=0)  # 9,000 train / 1,000 validation
    model = build_model("lenet5")
    fit_cached("lenet5", model, splits.train, splits.val,
               TrainConfig(epochs=4, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0), seed=0)
    save_torch(path, model.state_dict())
    return model.eval()


def _peer_fault(name: str, shape: tuple[int, ...], index: int, bit: int) -> list[int | None]:
    layer = ["conv1", "conv2", "fc1", "fc2"].index(name)
    pos = [int(v) for v in torch.unravel_index(torch.tensor(index), shape)]
    return [layer, *pos, *([None] * (4 - len(pos))), bit]


def _group(faults: list[tuple[str, int, int]], names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for n in names:
        pairs = [(i, b) for layer, i, b in faults if layer == n]
        if pairs:
            out[n] = (torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", type=int, default=90, help="the shared fault list, evaluated by both sides")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the list split in equal shares)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    ap.add_argument("--ours-only-faults", type=int, default=2400, help="ours alone on a full campaign (0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from crosslayer.data import load_dataset
    from crosslayer.resilience.batched import correct_counts
    from crosslayer.resilience.campaign import evaluate_sites, sample_sites
    from crosslayer.resilience.inject import stored_weights

    torch.set_num_threads(args.threads)
    py = peer_venv("pytorchfi", ["torch==2.13.0", "numpy"])
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "pytorchfi==0.6.0"], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    weights, data_file, script = WORK / "resilience_lenet5.pt", WORK / "resilience_test.pt", WORK / "resilience_peer.py"
    model = _trained_lenet5(weights)
    test = load_dataset("mnist", "test")
    torch.save({"images": test.images, "labels": test.labels}, data_file)
    script.write_text(PEER_SCRIPT)
    x, y = test.images, test.labels
    peer = subprocess.Popen([str(py), str(script), str(weights), str(data_file), str(args.threads)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert peer.stdin is not None and peer.stdout is not None
    peer_clean = json.loads(peer.stdout.readline())["clean"]

    gen = torch.Generator().manual_seed(args.seed)
    ours_rates, peer_rates, mismatches = [], [], []
    ours_s = peer_s = 0.0
    with stored_weights(model, representation="float32") as lw:
        names = list(lw)
        base = correct_counts(model, x, y)
        assert base == peer_clean, f"clean accuracy differs: ours {base}, PyTorchFI {peer_clean}"
        sites = sample_sites(lw, args.faults, None, gen)
        flat = [(n, int(i), int(b)) for n, (idx, bits) in sites.items() for i, b in zip(idx, bits, strict=True)]
        order = torch.randperm(len(flat), generator=gen).tolist()
        per_round = len(flat) // args.rounds
        for r in range(args.rounds):
            share = [flat[j] for j in order[r * per_round:(r + 1) * per_round]]
            t0 = time.perf_counter()
            records = evaluate_sites(model, lw, _group(share, names), x, y, base)
            dt = time.perf_counter() - t0
            ours_rates.append(len(records) / dt)
            ours_s += dt
            peer.stdin.write(json.dumps([_peer_fault(f.layer, tuple(lw[f.layer].weight.shape), f.index, f.bit)
                                         for f in records]) + "\n")
            peer.stdin.flush()
            reply = json.loads(peer.stdout.readline())
            peer_rates.append(len(records) / reply["seconds"])
            peer_s += reply["seconds"]
            for f, c in zip(records, reply["counts"], strict=True):
                mismatches.append(abs(f.drop_pp - (base - c) * 100.0 / len(y)))
            print(f"round {r + 1}: {len(records)} faults, ours {ours_rates[-1]:.2f}/s, "
                  f"PyTorchFI {peer_rates[-1]:.3f}/s, max mismatch {max(mismatches):.4f} pp", flush=True)
        peer.stdin.close()
        peer.wait(timeout=60)
        extra: dict[str, object] = {}
        if args.ours_only_faults:
            big = sample_sites(lw, args.ours_only_faults, None, torch.Generator().manual_seed(args.seed + 1))
            t0 = time.perf_counter()
            recs = evaluate_sites(model, lw, big, x, y, base)
            dt = time.perf_counter() - t0
            extra = {"faults": len(recs), "seconds": dt, "injections_per_s": len(recs) / dt,
                     "faults_per_layer": {n: int(i.numel()) for n, (i, _) in big.items()},
                     "note": "ours alone on a full statistical campaign; not part of the speedup"}
            print(f"ours alone: {len(recs)} faults in {dt:.1f} s ({len(recs) / dt:.1f}/s)", flush=True)
    ours, theirs = statistics.median(ours_rates), statistics.median(peer_rates)
    n_faults = per_round * args.rounds
    write_results("resilience", {
        "campaign": "single bit flips of float32 weights, uniform over all (weight, bit) sites of LeNet-5",
        "comparison": "the same fault list on both sides, same 10k test images, same torch threads; "
                      "rates are medians over interleaved rounds",
        "test_images": len(y), "clean_accuracy": base / len(y), "threads": args.threads, "rounds": args.rounds,
        "faults": n_faults, "faults_per_round": per_round,
        "faults_per_layer": {n: sum(1 for f in flat if f[0] == n) for n in names},
        "ours_injections_per_s": ours, "pytorchfi_injections_per_s": theirs, "speedup": ours / theirs,
        "ours_seconds_total": ours_s, "pytorchfi_seconds_total": peer_s, "speedup_total_time": peer_s / ours_s,
        "max_accuracy_mismatch_pp": max(mismatches), "compared_faults": len(mismatches),
        "round_rates": {"ours": ours_rates, "pytorchfi": peer_rates},
        "ours_only_campaign": extra, "pytorchfi_version": "0.6.0",
    })


if __name__ == "__main__":
    main()

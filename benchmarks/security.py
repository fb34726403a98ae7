"""Security benchmark -> benchmarks/results/security.json.

1. FGSM and PGD-40 (L-inf, eps 0.1 and 0.3) on the same LeNet-5 and the same 1,000 MNIST test images,
   ours vs torchattacks 3.5.1 vs ART (adversarial-robustness-toolbox): success rates and wall time.
   The peers run in their own venv (benchmarks/.work/venv-security) as a worker process that receives
   the saved state dict and input tensor; each repetition times ours and each peer back to back
   (interleaved, the order rotating from one repetition to the next) and the medians are reported.
   Both processes use the same number of torch threads (``--threads``, default 1; 0 = torch's default).
   Success rate = share of the originally correct images
   that the attack makes wrong (the same definition and clean predictions for all three tools).
2. PGD adversarial training (Madry et al.) of LeNet-5 on the 9k MNIST training split, robust accuracy
   under PGD-40 eps 0.3 on the 1,000 images.
3. BadNets at 10 % poisoning, then fine-pruning: ASR before / after, clean accuracy loss.

Usage: .venv/bin/python benchmarks/security.py [--repeats 3] [--fgsm-repeats 15] [--threads 1] [--adv-epochs 3]
       [--adv-train-steps 5] [--prune-epochs 2] [--prune-lr 0.05]
       [--skip-peers] [--only attacks|advtrain|badnets]
A full run writes the whole file; every part is also merged into it as soon as it is measured, and
``--only`` re-measures one part and updates the file (the other keys are kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, ROOT, WORK, merge_results, peer_venv, shared_mnist_baseline, write_results
from crosslayer.models import build_model
from crosslayer.security import (
    BadNetsConfig,
    FinePruneConfig,
    PGDConfig,
    run_attack,
)
from crosslayer.security.adv_training import adversarial_train
from crosslayer.security.experiments import backdoor_experiment
from crosslayer.train import TrainConfig, evaluate

PEERS = ["torch==2.13.0", "numpy", "scipy", "scikit-learn", "tqdm", "six", "setuptools", "packaging"]
PEERS_NODEPS = ["torchattacks==3.5.1", "adversarial-robustness-toolbox==1.20.1"]
# BadNets trains its own (poisoned) LeNet-5 from scratch with this short recipe; the attacks and adversarial
# training start from the shared baseline (BASELINE_RECIPES["lenet5"]).
QUICK_TRAIN = TrainConfig(epochs=4, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0)
N_IMAGES = 1000
STEPS = 40

WORKER = r'''
import json, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
if int(sys.argv[4]) > 0:
    torch.set_num_threads(int(sys.argv[4]))
from crosslayer.models.lenet import LeNet5
model = LeNet5().eval()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
blob = torch.load(sys.argv[3], weights_only=True)
x, y = blob["x"], blob["y"]
art_clf = None
for line in sys.stdin:
    req = json.loads(line)
    torch.manual_seed(req["seed"]); np.random.seed(req["seed"])
    if req["tool"] == "ours":
        from crosslayer.security import PGDConfig, fgsm, pgd
        from crosslayer.security.base import frozen
        with frozen(model):
            t0 = time.perf_counter()
            if req["attack"] == "fgsm":
                adv = fgsm(model, x, y, req["eps"])
            else:
                adv = pgd(model, x, y, PGDConfig(eps=req["eps"], steps=req["steps"], alpha=req["alpha"]),
                          gen=torch.Generator().manual_seed(req["seed"]))
            sec = time.perf_counter() - t0
    elif req["tool"] == "torchattacks":
        import torchattacks
        if req["attack"] == "fgsm":
            atk = torchattacks.FGSM(model, eps=req["eps"])
        else:
            atk = torchattacks.PGD(model, eps=req["eps"], alpha=req["alpha"], steps=req["steps"], random_start=True)
        t0 = time.perf_counter(); adv = atk(x, y); sec = time.perf_counter() - t0
    else:
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
        if art_clf is None:
            art_clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                        nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
        if req["attack"] == "fgsm":
            atk = FastGradientMethod(art_clf, norm=np.inf, eps=req["eps"], batch_size=len(x))
        else:
            atk = ProjectedGradientDescent(art_clf, norm=np.inf, eps=req["eps"], eps_step=req["alpha"],
                                           max_iter=req["steps"], num_random_init=1, batch_size=len(x), verbose=False)
        xn, yn = x.numpy(), y.numpy()
        t0 = time.perf_counter(); adv = torch.from_numpy(atk.generate(xn, yn)); sec = time.perf_counter() - t0
    with torch.no_grad():
        pred = model(adv).argmax(1)
    linf = float((adv - x).abs().amax())
    print(json.dumps({"seconds": sec, "pred": pred.tolist(), "linf": linf, "threads": torch.get_num_threads()}),
          flush=True)
'''


class Peer:
    """A worker process, one request per line: torchattacks + ART in their venv, or ours in the project's venv.

    Every tool runs in a fresh process of its own with the same loading code, so no side pays for the
    other's process state (the benchmark's data loading and training live in the parent process).
    """

    def __init__(self, py: Path, weights: Path, inputs: Path, threads: int) -> None:
        script = WORK / "security_peer_worker.py"
        if not script.is_file() or script.read_text() != WORKER:
            script.write_text(WORKER)
        self.proc = subprocess.Popen([str(py), str(script), str(ROOT / "src"), str(weights), str(inputs),
                                      str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("peer worker died; see its stderr above")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _success(pred: torch.Tensor, y: torch.Tensor, correct: torch.Tensor) -> float:
    return float(((pred != y) & correct).sum()) / max(1, int(correct.sum()))


def compare_attacks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int, fgsm_repeats: int,
                    skip_peers: bool, threads: int) -> dict[str, Any]:
    work = WORK / "security"
    work.mkdir(parents=True, exist_ok=True)
    weights, inputs = work / "lenet5.pt", work / "inputs.pt"
    torch.save(model.state_dict(), weights)
    torch.save({"x": x, "y": y}, inputs)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    peer = None
    if not skip_peers:
        py = peer_venv("security", PEERS)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *PEERS_NODEPS], check=True)
        peer = Peer(py, weights, inputs, threads)
        for tool in ("torchattacks", "art"):  # untimed warm-up: imports, ART's classifier wrapper
            peer.run(tool=tool, seed=0, attack="fgsm", eps=0.1, alpha=0.0, steps=1)
    ours = Peer(Path(sys.executable), weights, inputs, threads)
    ours.run(tool="ours", seed=0, attack="fgsm", eps=0.1, alpha=0.0, steps=1)
    out: dict[str, Any] = {"clean_accuracy": float(correct.float().mean()), "n_images": len(x)}
    try:
        for attack in ("fgsm", "pgd40"):
            for eps in (0.1, 0.3):
                alpha = 2.5 * eps / STEPS
                req = {"attack": "fgsm" if attack == "fgsm" else "pgd", "eps": eps, "alpha": alpha, "steps": STEPS}
                times: dict[str, list[float]] = {"ours": [], "torchattacks": [], "art": []}
                succ: dict[str, list[float]] = {"ours": [], "torchattacks": [], "art": []}
                tools = ["ours", "torchattacks", "art"] if peer is not None else ["ours"]
                # interleaved, the order rotating: ours first, then second, then third, ...
                for rep in range(fgsm_repeats if attack == "fgsm" else repeats):
                    for tool in tools[rep % len(tools):] + tools[:rep % len(tools)]:
                        worker = ours if tool == "ours" else peer
                        assert worker is not None
                        r = worker.run(tool=tool, seed=rep, **req)
                        sec, pred = r["seconds"], torch.tensor(r["pred"])
                        times[tool].append(sec)
                        succ[tool].append(_success(pred, y, correct))
                key = f"{attack}_eps{eps:g}"
                entry: dict[str, Any] = {}
                for tool in ("ours", "torchattacks", "art"):
                    if times[tool]:
                        entry[f"{tool}_success"] = statistics.median(succ[tool])
                        entry[f"{tool}_seconds"] = statistics.median(times[tool])
                        entry[f"{tool}_seconds_all"] = times[tool]
                if peer is not None:
                    entry["max_success_gap_pp"] = 100 * max(abs(entry["ours_success"] - entry["torchattacks_success"]),
                                                            abs(entry["ours_success"] - entry["art_success"]))
                    entry["time_ratio_ours_over_torchattacks"] = entry["ours_seconds"] / entry["torchattacks_seconds"]
                    entry["time_ratio_paired_median"] = statistics.median(
                        o / t for o, t in zip(times["ours"], times["torchattacks"], strict=True))
                out[key] = entry
                merge_results("security", {key: entry})  # saved as it goes: a slow machine keeps what was measured
                print(key, {k: v for k, v in entry.items() if not k.endswith("_all")}, flush=True)
    finally:
        ours.close()
        if peer is not None:
            peer.close()
    return out


def adv_training(model: torch.nn.Module, data: Any, x: torch.Tensor, y: torch.Tensor, epochs: int,
                 train_steps: int) -> dict[str, Any]:
    import copy

    robust = copy.deepcopy(model)
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.001, optimizer="adam", weight_decay=0.0)
    adversarial_train(robust, data.train, data.val, cfg, PGDConfig(eps=0.3, steps=train_steps), seed=0,
                      ramp_epochs=min(2.0, epochs / 3))
    seconds = time.perf_counter() - t0
    res = run_attack(robust, x, y, PGDConfig(eps=0.3, steps=STEPS), seed=0, with_ssim=False)
    return {"adv_trained_robust_accuracy": res.metrics["robust_accuracy"],
            "adv_trained_clean_accuracy": res.metrics["clean_accuracy"],
            "adv_training": {"epochs": epochs, "train_pgd_steps": train_steps, "eps": 0.3, "start": "the clean LeNet-5",
                             "train_images": len(data.train), "seconds": seconds,
                             "eval": f"PGD-{STEPS}, eps 0.3, alpha 2.5*eps/steps, random start, {len(x)} test images"}}


def badnets(data: Any, epochs: int, prune_epochs: int, prune_lr: float) -> dict[str, Any]:
    model = build_model("lenet5")
    t0 = time.perf_counter()
    out = backdoor_experiment(model, data, BadNetsConfig(rate=0.1), QUICK_TRAIN,
                              FinePruneConfig(epochs=prune_epochs, lr=prune_lr), seed=0)
    return {**out.metrics(), "badnets_seconds": time.perf_counter() - t0,
            "badnets_setup": f"LeNet-5 from scratch, {epochs} epochs on {len(data.train)} images, 10 % poisoned "
                             "with a 4x4 white corner patch to class 0; fine-pruning of conv2 + "
                             f"{prune_epochs} clean epochs (SGD, lr {prune_lr:g}, cosine); "
                             f"{len(data.test)} test images"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="repetitions of each PGD-40 timing")
    ap.add_argument("--fgsm-repeats", type=int, default=15,
                    help="repetitions of each FGSM timing (one pass of ~0.4 s: more samples for a steady median)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of both sides (default 1: on a small shared machine two threads per process "
                         "oversubscribe the cores and timings swing several-fold); 0 = torch's default")
    ap.add_argument("--adv-epochs", type=int, default=3)
    ap.add_argument("--adv-train-steps", type=int, default=5)
    ap.add_argument("--prune-epochs", type=int, default=2, help="fine-pruning: clean fine-tuning epochs")
    ap.add_argument("--prune-lr", type=float, default=0.05,
                    help="fine-pruning: fine-tuning learning rate (0.05 chosen on the validation ASR; "
                         "0.01 left 15-18 %%)")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--only", choices=["attacks", "advtrain", "badnets"], default=None)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    data, model, _ = shared_mnist_baseline("lenet5")
    x, y = data.test.images[:N_IMAGES], data.test.labels[:N_IMAGES]
    results: dict[str, Any] = {"model": "LeNet-5 (Caffe), the shared baseline (BASELINE_RECIPES['lenet5'], cached)",
                               "baseline_training": BASELINE_RECIPES["lenet5"],
                               "test_accuracy": evaluate(model, data.test).accuracy,
                               "pgd_alpha": "2.5 * eps / 40"}
    settings = {"repeats": args.repeats, "fgsm_repeats": args.fgsm_repeats, "torch_threads": torch.get_num_threads(),
                "adv_epochs": args.adv_epochs,
                "adv_train_steps": args.adv_train_steps, "prune_epochs": args.prune_epochs, "prune_lr": args.prune_lr,
                "skip_peers": args.skip_peers, "only": args.only,
                "command": "benchmarks/security.py " + " ".join(sys.argv[1:])}
    part_settings = "settings" if args.only is None else f"settings_{args.only}"
    results[part_settings] = settings
    if args.only in (None, "attacks"):
        results["repeats"] = {"fgsm": args.fgsm_repeats, "pgd40": args.repeats}
        results.update(compare_attacks(model, x, y, args.repeats, args.fgsm_repeats, args.skip_peers, args.threads))
        merge_results("security", results)
    if args.only in (None, "advtrain"):
        results.update(adv_training(model, data, x, y, args.adv_epochs, args.adv_train_steps))
        merge_results("security", results)
    if args.only in (None, "badnets"):
        results.update(badnets(data, QUICK_TRAIN.epochs, args.prune_epochs, args.prune_lr))
        merge_results("security", results)
    settings["total_seconds"] = time.perf_counter() - t_start
    if args.only is not None:  # a partial run updates the keys it measured in the existing results file
        merge_results("security", results)
    else:  # a full run re-creates the file: no key from an older run survives
        write_results("security", results)


if __name__ == "__main__":
    main()

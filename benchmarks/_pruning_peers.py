"""Our pruning next to its peers, in one process, on the same model, data and fine-tuning.

(a) class-blind magnitude pruning (crosslayer.prune) vs ``torch.nn.utils.prune.global_unstructured``
    (L1) at equal sparsity: accuracy after the same fine-tuning, wall time of the pruning call and of
    the fine-tuning (PyTorch keeps masks as a forward pre-hook, we re-apply them after each step).
(b) structured L1 channel pruning (crosslayer.prune.structured) vs Torch-Pruning's MagnitudePruner
    at equal FLOPs (the same per-layer channel ratio, so the same architecture): accuracy after the
    same fine-tuning, parameters, MACs, wall time of the pruning call.

Timings interleave the two sides and quote medians. The compression benchmark imports
:func:`compare_unstructured` and :func:`compare_structured`; run alone,
``python benchmarks/_pruning_peers.py`` writes benchmarks/results/pruning_peers.json.
Torch-Pruning is installed with ``--no-deps`` into benchmarks/.work/site-torch-pruning (it needs only
torch and numpy, which the toolkit already has), never into .venv.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, baseline_model, write_results
from crosslayer.data import DataSplits, load_splits
from crosslayer.prune import (
    apply_masks,
    count_macs,
    magnitude_masks,
    mask_sparsity,
    prunable_groups,
    prunable_weights,
    prune_groups,
)
from crosslayer.train import TrainConfig, evaluate, fit, fit_cached

TORCH_PRUNING = "torch-pruning==1.6.1"
FINETUNE = TrainConfig(epochs=2, batch_size=64, lr=1e-3, optimizer="adam", weight_decay=0.0)
BASELINE = TrainConfig(epochs=4, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0)


def torch_pruning() -> Any:
    """Import Torch-Pruning, installing it (no deps) under benchmarks/.work on first use."""
    target = WORK / "site-torch-pruning"
    if not (target / "torch_pruning").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        TORCH_PRUNING], check=True)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    return importlib.import_module("torch_pruning")


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _weight_sparsity(model: nn.Module) -> float:
    ws = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def compare_unstructured(model: nn.Module, data: DataSplits, sparsity: float = 0.9, *,
                         finetune: TrainConfig = FINETUNE, seed: int = 0, repeats: int = 5) -> dict[str, Any]:
    """Class-blind (ours) vs ``torch.nn.utils.prune.global_unstructured`` (L1) at equal sparsity."""
    from torch.nn.utils import prune as tprune

    base_acc = evaluate(model, data.test).accuracy

    def ours() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        m = copy.deepcopy(model)
        masks, _ = magnitude_masks(prunable_weights(m), "class-blind", sparsity)
        apply_masks(m, masks)
        return m, masks

    def theirs() -> nn.Module:
        m = copy.deepcopy(model)
        params = [(mod, "weight") for mod in m.modules() if isinstance(mod, nn.Conv2d | nn.Linear)]
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=sparsity)
        return m

    prune_s = _interleaved({"ours": ours, "torch": theirs}, repeats)
    m_ours, masks = ours()
    m_torch = theirs()
    same_mask = all(torch.equal(masks[f"{n}.weight"], mod.weight_mask.bool())
                    for n, mod in m_torch.named_modules() if isinstance(mod, nn.Conv2d | nn.Linear))
    t0 = time.perf_counter()
    fit(m_ours, data.train, data.val, finetune, seed=seed, on_step=lambda m: apply_masks(m, masks), desc="ours")
    ft_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit(m_torch, data.train, data.val, finetune, seed=seed, desc="torch.prune")
    ft_torch = time.perf_counter() - t0
    for mod in m_torch.modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            tprune.remove(mod, "weight")
    return {
        "sparsity_target": sparsity, "baseline_test_accuracy": base_acc,
        "ours": {"sparsity": mask_sparsity(masks), "weight_sparsity": _weight_sparsity(m_ours),
                 "test_accuracy": evaluate(m_ours, data.test).accuracy, "prune_seconds_median": prune_s["ours"],
                 "finetune_seconds": ft_ours},
        "torch_global_unstructured": {"weight_sparsity": _weight_sparsity(m_torch),
                                      "test_accuracy": evaluate(m_torch, data.test).accuracy,
                                      "prune_seconds_median": prune_s["torch"], "finetune_seconds": ft_torch},
        "same_masks_before_finetune": same_mask, "finetune": {"epochs": finetune.epochs, "lr": finetune.lr,
                                                              "optimizer": finetune.optimizer},
        "timing": f"prune_seconds_median: median of {repeats} interleaved runs of the prune call; finetune_seconds: "
                  "one run each, not interleaved (indicative only on a shared machine)",
    }


def compare_structured(model: nn.Module, data: DataSplits, amount: float = 0.5, *, finetune: TrainConfig = FINETUNE,
                       seed: int = 0, repeats: int = 5) -> dict[str, Any]:
    """Structured L1 channel pruning (ours) vs Torch-Pruning's MagnitudePruner at the same channel ratio."""
    tp = torch_pruning()
    example = data.train.images[:1]
    base_acc = evaluate(model, data.test).accuracy
    macs0, params0 = count_macs(model, example), sum(p.numel() for p in model.parameters())
    output_layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1:]

    def ours() -> nn.Module:
        m = copy.deepcopy(model)
        groups = prunable_groups(m, example)
        prune_groups(m, groups, {g.key: max(1, g.size - round(amount * g.size)) for g in groups}, "l1")
        return m

    def theirs() -> nn.Module:
        m = copy.deepcopy(model)
        mods = dict(m.named_modules())
        pr = tp.pruner.MagnitudePruner(m, example, tp.importance.MagnitudeImportance(p=1), pruning_ratio=amount,
                                       ignored_layers=[mods[n] for n in output_layers])
        pr.step()
        return m

    prune_s = _interleaved({"ours": ours, "torch_pruning": theirs}, repeats)
    out: dict[str, Any] = {"amount": amount, "baseline_test_accuracy": base_acc, "baseline_params": params0,
                           "baseline_macs": macs0,
                           "finetune": {"epochs": finetune.epochs, "lr": finetune.lr, "optimizer": finetune.optimizer}}
    for name, make in (("ours", ours), ("torch_pruning", theirs)):
        m = make()
        shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
        acc0 = evaluate(m, data.test).accuracy
        t0 = time.perf_counter()
        fit(m, data.train, data.val, finetune, seed=seed, desc=name)
        ft = time.perf_counter() - t0
        out[name] = {"params": sum(p.numel() for p in m.parameters()), "macs": count_macs(m, example),
                     "test_accuracy_before_finetune": acc0, "test_accuracy": evaluate(m, data.test).accuracy,
                     "prune_seconds_median": prune_s[name], "finetune_seconds": ft,
                     "shapes": {k: list(v) for k, v in shapes.items()}}
    out["same_architecture"] = out["ours"]["shapes"] == out["torch_pruning"]["shapes"]
    out["timing"] = (f"prune_seconds_median: median of {repeats} interleaved runs of the prune call (ours traces the "
                     "graph on every call); finetune_seconds: one run each, not interleaved (indicative only)")
    out["importance_note"] = ("ours: L1 of each producer filter (Li et al. 2017); Torch-Pruning MagnitudeImportance: "
                              "mean-normalised L1 over the whole dependency group, so the kept channels differ")
    return out


def trained(name: str, data: DataSplits, cfg: TrainConfig = BASELINE, seed: int = 0) -> nn.Module:
    """A baseline trained (or reused from the training cache) on ``data``."""
    model = baseline_model(name, seed)
    fit_cached(name, model, data.train, data.val, cfg, seed=seed, desc=f"baseline {name}")
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3,000 training images and 1 fine-tuning epoch (for a loaded machine); default: 9k, 2 epochs")
    args = ap.parse_args(argv)
    data = load_splits("mnist", None, train_limit=10000, seed=0)  # 9k train / 1k val / 10k test
    finetune = FINETUNE
    if args.quick:
        data = DataSplits(data.train.subset(3000), data.val, data.test)
        finetune = TrainConfig(epochs=1, batch_size=64, lr=5e-4, optimizer="adam", weight_decay=0.0)
    results: dict[str, Any] = {"quick": args.quick,
                               "data": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                               "baseline_training": {"epochs": BASELINE.epochs, "lr": BASELINE.lr,
                                                     "optimizer": BASELINE.optimizer, "train_images": 9000}}
    t0 = time.perf_counter()
    full = load_splits("mnist", None, train_limit=10000, seed=0)
    for name in ("lenet5", "lenet300"):
        model = trained(name, full)
        results[name] = {"unstructured": compare_unstructured(model, data, 0.9, finetune=finetune),
                         "structured": compare_structured(model, data, 0.5, finetune=finetune)}
    results["seconds"] = time.perf_counter() - t0
    write_results("pruning_peers", results)


if __name__ == "__main__":
    main()

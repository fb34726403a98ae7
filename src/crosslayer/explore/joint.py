"""Pruning and quantization together.

- **Sequential** (Han et al., "Deep Compression", ICLR 2016): iterative pruning with fine-tuning, then
  quantization of the survivors (here fixed-point, PTQ or QAT with the pruning masks kept).
- **One loop** (in the spirit of CLIP-Q, Tung & Mori, CVPR 2018): at each step prune *and* quantize in
  parallel before fine-tuning, so the fine-tuning sees the sparse, quantized network it will become; the
  full-precision weights are kept for the magnitude ranking of the next step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.prune import magnitude_masks, mask_sparsity, prunable_weights
from crosslayer.prune.schedule import IterativePruner, ScheduleConfig
from crosslayer.quant.pipeline import QuantizeConfig, quantize
from crosslayer.quant.storage import quantized_storage
from crosslayer.train import evaluate, progress

__all__ = ["JointResult", "one_loop", "sequential"]


@dataclass
class JointResult:
    model: nn.Module
    sparsity: float
    test_accuracy: float
    weight_bits_total: int
    compression_ratio: float
    history: list[dict[str, Any]]


def _finish(model: nn.Module, data: DataSplits, history: list[dict[str, Any]]) -> JointResult:
    storage = quantized_storage(model)
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    return JointResult(model, zeros / total, evaluate(model, data.test).accuracy, storage.bits,
                       storage.compression_ratio, history)


def sequential(model: nn.Module, data: DataSplits, prune_cfg: ScheduleConfig, quant_cfg: QuantizeConfig, *,
               seed: int = 0, state_path: Any = None) -> JointResult:
    """Deep Compression order: iterative pruning within budget, then quantization keeping the masks."""
    outcome = IterativePruner(model, data, prune_cfg, seed=seed, state_path=state_path).run()
    q = quantize(outcome.model, quant_cfg, data, seed=seed, masks=outcome.masks)
    hist = [*outcome.history, {"step": "quantize", "mode": quant_cfg.mode, "weight_bits": quant_cfg.weight_bits}]
    return _finish(q.model, data, hist)


def one_loop(model: nn.Module, data: DataSplits, targets: tuple[float, ...], quant_cfg: QuantizeConfig, *,
             scheme: str = "class-blind", seed: int = 0) -> JointResult:
    """Prune to each target and quantize in the same step, then fine-tune (QAT with the masks)."""
    full = copy.deepcopy(model)
    history: list[dict[str, Any]] = []
    masks = None
    current: nn.Module = full
    with progress() as bar:
        task = bar.add_task("prune + quantize", total=len(targets), info="")
        for target in targets:
            masks, _ = magnitude_masks({k: v.detach() for k, v in prunable_weights(full).items()}, scheme,
                                       target, masks)
            step_model = copy.deepcopy(full)
            with torch.no_grad():
                for name, p in step_model.named_parameters():
                    if name in masks:
                        p.mul_(masks[name].to(p.dtype))
            out = quantize(step_model, quant_cfg, data, seed=seed, masks=masks)
            current = out.model
            val = evaluate(current, data.val).accuracy
            history.append({"target": target, "sparsity": mask_sparsity(masks), "val_accuracy": val})
            # Keep the fine-tuned weights (de-quantized view) as the full-precision ranking for the next step.
            full.load_state_dict({k: v for k, v in current.state_dict().items() if k in full.state_dict()},
                                 strict=False)
            bar.update(task, advance=1, info=f"{target:.2f}: val {val:.4f}")
    return _finish(current, data, history)

"""Design-space sweep: pruning scheme × sparsity × bit width, each point measured (accuracy, storage with
index overhead, MACs, non-zero MACs). The pruned model of a (scheme, sparsity) is fine-tuned once and
reused for every bit width."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.prune import apply_masks, count_macs, magnitude_masks, mask_sparsity, model_storage, prunable_weights
from crosslayer.quant.pipeline import QuantizeConfig, quantize
from crosslayer.quant.storage import quantized_storage
from crosslayer.train import TrainConfig, evaluate, fit, progress

__all__ = ["DesignPoint", "sweep"]


@dataclass(frozen=True)
class DesignPoint:
    scheme: str
    sparsity: float
    weight_bits: int          # 32 = float (pruned only)
    test_accuracy: float
    storage_bits: int         # values + indices + fillers + scales, all parameters
    compression_ratio: float  # dense fp32 bits / storage_bits
    macs: int
    nonzero_macs: int
    val_accuracy: float | None = None  # what choices among the points are made on (the test split only measures)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _keep(masks: dict[str, torch.Tensor]) -> Callable[[nn.Module], None]:
    def hook(model: nn.Module) -> None:
        apply_masks(model, masks)
    return hook


def sweep(model: nn.Module, data: DataSplits, *, schemes: tuple[str, ...], sparsities: tuple[float, ...],
          bits: tuple[int, ...], finetune: TrainConfig, act_bits: int = 8, seed: int = 0,
          finetune_limit: int = 0) -> list[DesignPoint]:
    """Every (scheme, sparsity) pruned one-shot from ``model`` and fine-tuned with masks, then quantized
    (PTQ) at each width in ``bits``; plus the float pruned point (``weight_bits = 32``). Each point is measured
    on the test split and on the validation split (for choices among the points)."""
    example = data.train.images[:1]
    macs = count_macs(model, example)
    train = data.train.subset(finetune_limit) if finetune_limit else data.train
    weights = {k: v.detach() for k, v in prunable_weights(model).items()}
    points: list[DesignPoint] = []
    with progress() as bar:
        task = bar.add_task("explore", total=len(schemes) * len(sparsities) * (1 + len(bits)), info="")
        for scheme in schemes:
            for s in sparsities:
                masks, _ = magnitude_masks(weights, scheme, s)
                pruned = apply_masks(copy.deepcopy(model), masks)
                if finetune.epochs:
                    fit(pruned, train, data.val, finetune, seed=seed, on_step=_keep(masks), desc=f"{scheme} {s:.2f}")
                st = model_storage(pruned)
                nz = count_macs(pruned, example, nonzero=True)
                points.append(DesignPoint(scheme, mask_sparsity(masks), 32, evaluate(pruned, data.test).accuracy,
                                          st.bits, st.compression_ratio, macs, nz, evaluate(pruned, data.val).accuracy))
                bar.advance(task)
                for b in bits:
                    q = quantize(pruned, QuantizeConfig(mode="ptq", weight_bits=b, act_bits=act_bits), data,
                                          seed=seed, masks=masks).model
                    qs = quantized_storage(q)
                    points.append(DesignPoint(scheme, mask_sparsity(masks), b, evaluate(q, data.test).accuracy,
                                              qs.bits, qs.compression_ratio, macs, nz, evaluate(q, data.val).accuracy))
                    bar.update(task, advance=1, info=f"{scheme} s={s:.2f} {b}b")
    return points

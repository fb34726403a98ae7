"""Bit-width sweep: the lowest fixed-point width with no accuracy loss beyond a budget, for the whole
network and per layer, post-training first and optionally with quantization-aware fine-tuning.

X-DNNs (Hanif et al., JOLPE 2018) finds 12-bit fixed point lossless for inference and 8 bits after
retraining; this sweep measures the same on any model. Per layer, one layer at a time is quantized
(the others stay float) to get its own lowest width; the combined per-layer assignment is then
checked and, while its loss exceeds the budget, the layer that lost most at its chosen width is
widened one step (losses of separately quantized layers add up).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from crosslayer.data import DataSplits
from crosslayer.data.datasets import ImageDataset
from crosslayer.quant.pipeline import QuantizeConfig, quantizable_layers, quantize
from crosslayer.train import evaluate, progress, within_budget

__all__ = ["SweepPoint", "SweepResult", "bit_sweep", "lowest_within_budget"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPoint:
    """Accuracy at one width; ``layer`` is ``""`` for the whole network."""

    bits: int
    layer: str
    accuracy: float
    loss_pp: float
    qat: bool = False


@dataclass
class SweepResult:
    reference_accuracy: float
    budget_pp: float
    points: list[SweepPoint] = field(default_factory=list)
    whole_net_bits: int | None = None
    whole_net_qat_bits: int | None = None
    per_layer_bits: dict[str, int | None] = field(default_factory=dict)
    combined_bits: dict[str, int] = field(default_factory=dict)
    combined_accuracy: float = float("nan")

    def series(self, layer: str = "", qat: bool = False) -> tuple[list[int], list[float]]:
        """(bits, accuracy) of one curve, widest first."""
        pts = sorted((p for p in self.points if p.layer == layer and p.qat == qat), key=lambda p: -p.bits)
        return [p.bits for p in pts], [p.accuracy for p in pts]


def lowest_within_budget(losses: Sequence[tuple[int, float]], budget_pp: float) -> int | None:
    """Lowest width such that it and every wider width tried lose at most ``budget_pp`` (None if the widest fails)."""
    best = None
    for bits, loss in sorted(losses, key=lambda t: -t[0]):
        if not within_budget(loss, budget_pp):
            break
        best = bits
    return best


def _point(model: nn.Module, data: DataSplits, cfg: QuantizeConfig, eval_set: ImageDataset, ref: float,
           bits: int, seed: int, layer: str = "", qat: bool = False) -> SweepPoint:
    c = dataclasses.replace(cfg, mode="qat" if qat else "ptq", weight_bits=bits,
                            act_bits=bits if cfg.act_bits else 0, layer_weight_bits={}, layer_act_bits={})
    q = quantize(model, c, data, seed=seed, layers=[layer] if layer else None).model
    acc = evaluate(q, eval_set).accuracy
    return SweepPoint(bits, layer, acc, 100.0 * (ref - acc), qat)


def bit_sweep(model: nn.Module, data: DataSplits, cfg: QuantizeConfig, *, eval_set: ImageDataset | None = None,
              seed: int = 0) -> SweepResult:
    """Sweep ``cfg.sweep_bits`` (weights and, unless ``cfg.act_bits == 0``, activations at the same width).

    Decisions use ``eval_set`` (default: the validation split), against the float model's accuracy on it.
    """
    ev = eval_set if eval_set is not None else data.val
    widths = sorted(set(cfg.sweep_bits), reverse=True)
    ref = evaluate(model, ev).accuracy
    res = SweepResult(reference_accuracy=ref, budget_pp=cfg.budget_pp)
    layers = quantizable_layers(model)
    total = len(widths) * (1 + (len(layers) if cfg.sweep_per_layer else 0))
    with progress() as bar:
        task = bar.add_task("bit sweep", total=total, info="")
        for b in widths:
            res.points.append(_point(model, data, cfg, ev, ref, b, seed))
            bar.advance(task)
        res.whole_net_bits = lowest_within_budget([(p.bits, p.loss_pp) for p in res.points], cfg.budget_pp)
        if cfg.sweep_qat:
            below = [b for b in widths if res.whole_net_bits is None or b < res.whole_net_bits]
            qat_pts: list[SweepPoint] = []
            for b in below:
                bar.update(task, info=f"QAT {b} bits")
                p = _point(model, data, cfg, ev, ref, b, seed, qat=True)
                qat_pts.append(p)
                if not within_budget(p.loss_pp, cfg.budget_pp):
                    break
            res.points.extend(qat_pts)
            ok = [p.bits for p in qat_pts if within_budget(p.loss_pp, cfg.budget_pp)]
            res.whole_net_qat_bits = lowest_within_budget(
                [(p.bits, p.loss_pp) for p in qat_pts], cfg.budget_pp) if ok else res.whole_net_bits
        if cfg.sweep_per_layer:
            for name in layers:
                pts = []
                for b in widths:
                    bar.update(task, info=f"{name} {b} bits")
                    pts.append(_point(model, data, cfg, ev, ref, b, seed, layer=name))
                    bar.advance(task)
                res.points.extend(pts)
                res.per_layer_bits[name] = lowest_within_budget([(p.bits, p.loss_pp) for p in pts], cfg.budget_pp)
            _combine(model, data, cfg, ev, ref, widths, res, seed)
    return res


def _combine(model: nn.Module, data: DataSplits, cfg: QuantizeConfig, ev: ImageDataset, ref: float,
             widths: list[int], res: SweepResult, seed: int) -> None:
    bits = {n: (b if b is not None else widths[0]) for n, b in res.per_layer_bits.items()}
    loss_at = {(p.layer, p.bits): p.loss_pp for p in res.points if p.layer and not p.qat}
    while True:
        c = dataclasses.replace(cfg, mode="ptq", layer_weight_bits=dict(bits),
                                layer_act_bits=dict(bits) if cfg.act_bits else {})
        acc = evaluate(quantize(model, c, data, seed=seed).model, ev).accuracy
        widenable = [n for n in bits if bits[n] < widths[0]]
        if within_budget(100.0 * (ref - acc), cfg.budget_pp) or not widenable:
            break
        worst = max(widenable, key=lambda n: loss_at.get((n, bits[n]), 0.0))
        bits[worst] = min(b for b in widths if b > bits[worst])
        log.info("per-layer widths lose %.2f pp together; widening %s to %d bits", 100 * (ref - acc), worst,
                 bits[worst])
    res.combined_bits, res.combined_accuracy = bits, acc

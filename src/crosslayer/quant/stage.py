"""Flow stage ``quantize``: fixed-point (PTQ or QAT), binary or ternary quantization of the current
model (which may be pruned: its zeros stay exactly zero), an optional bit-width sweep, and the honest
storage of the result (codes + relative indices + scales)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from crosslayer.quant.layers import iter_quant_layers
from crosslayer.quant.pipeline import QuantizeConfig, quantize
from crosslayer.quant.storage import QuantStorage, quantized_storage
from crosslayer.quant.sweep import SweepResult, bit_sweep
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import evaluate

__all__ = ["quantize_stage", "sweep_figure"]

log = logging.getLogger(__name__)


def _usable_masks(model: nn.Module, masks: Any, notes: list[str]) -> dict[str, torch.Tensor] | None:
    """The prune stage's masks when they fit the model's parameters, else None (zeros read from the weights)."""
    if not isinstance(masks, Mapping) or not masks:
        notes.append("no pruning_masks artifact: the zeros to keep are read from the weights themselves")
        return None
    params = dict(model.named_parameters())
    ok = all(k in params and tuple(v.shape) == tuple(params[k].shape) for k, v in masks.items())
    if not ok:
        notes.append("pruning_masks do not match the current model's parameters (structured pruning?); "
                     "zeros to keep are read from the weights")
        return None
    return {k: v.bool() for k, v in masks.items()}


def _weight_sparsity(storage: QuantStorage, model: nn.Module) -> float:
    names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    ts = [t for t in storage.tensors if t.name in names]
    numel = sum(t.numel for t in ts)
    return 1.0 - sum(t.nonzeros for t in ts) / max(1, numel)


def sweep_figure(res: SweepResult, title: str = "Accuracy vs. bit width") -> Any:
    """Accuracy vs. bit width: whole network (PTQ, QAT) and each layer alone, with the budget line."""
    from crosslayer import viz

    fig, ax = viz.new_figure(7.0, 4.2)
    curves = [("whole net, PTQ", "", False, "-", 2.5), ("whole net, QAT", "", True, "-", 2.5)]
    curves += [(f"{n} only, PTQ", n, False, "--", 1.2) for n in res.per_layer_bits]
    for label, layer, qat, style, lw in curves:
        xs, ys = res.series(layer, qat)
        if xs:
            ax.plot(xs, [100 * y for y in ys], style, marker="o", lw=lw, ms=4, label=label)
    ax.axhline(100 * res.reference_accuracy - res.budget_pp, color="grey", lw=1, ls=":",
               label=f"float − {res.budget_pp:g} pp")
    ax.set_xlabel("bit width (weights and activations)")
    ax.set_ylabel("validation accuracy (%)")
    accs = [100 * p.accuracy for p in res.points] + [100 * res.reference_accuracy]
    ax.set_ylim(max(min(*accs, accs[-1] - 5), accs[-1] - 20) - 0.5, max(accs) + 0.5)
    ax.invert_xaxis()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return viz.to_figure(fig, title, "Each point quantizes weights and input activations to that width "
                         "(per-layer curves: only that layer). The lowest width above the dotted line is "
                         "the lossless width.")


def _add_sweep(rep: Report, res: SweepResult) -> None:
    rep.metrics.update({"sweep_reference_val_accuracy": res.reference_accuracy,
                        "sweep_lossless_bits": res.whole_net_bits,
                        "sweep_lossless_bits_qat": res.whole_net_qat_bits,
                        "sweep_per_layer_bits": dict(res.combined_bits),
                        "sweep_per_layer_val_accuracy": res.combined_accuracy})
    rep.add_table("Bit-width sweep (validation accuracy)", ["scope", "bits", "QAT", "accuracy", "loss (pp)"],
                  [[p.layer or "whole net", p.bits, p.qat, p.accuracy, p.loss_pp] for p in res.points])
    if res.per_layer_bits:
        rep.add_table("Lowest width per layer", ["layer", "alone", "combined"],
                      [[n, b, res.combined_bits.get(n)] for n, b in res.per_layer_bits.items()])
    rep.figures.append(sweep_figure(res))


@register_stage("quantize", QuantizeConfig,
                "fixed-point / binary / ternary quantization of weights and activations (PTQ, QAT, sweep)")
def quantize_stage(ctx: StageContext, cfg: QuantizeConfig) -> StageResult:
    rep = Report("quantize")
    source = ctx.model
    masks = _usable_masks(source, ctx.artifacts.get("pruning_masks"), rep.notes)
    ref = evaluate(source, ctx.data.test).accuracy
    out = quantize(source, cfg, ctx.data, seed=ctx.seed, masks=masks)
    q = out.model
    test = evaluate(q, ctx.data.test)
    storage = quantized_storage(q)
    base = ctx.reports.get("baseline")
    base_acc = base.metrics.get("test_accuracy") if base is not None else None
    rep.metrics.update({
        "test_accuracy": test.accuracy, "input_test_accuracy": ref,
        "accuracy_loss_pp": 100.0 * (ref - test.accuracy),
        "accuracy_loss_vs_baseline_pp": 100.0 * (base_acc - test.accuracy) if isinstance(base_acc, float) else None,
        "mode": cfg.mode, "weight_bits": 1 if cfg.mode == "binary" else 2 if cfg.mode == "ternary" else cfg.weight_bits,
        "act_bits": cfg.act_bits, "sparsity": _weight_sparsity(storage, q),
        "weight_bits_total": storage.bits, "dense_fp32_bits": storage.dense_fp32_bits,
        "index_bits_total": storage.index_bits_total, "scale_bits_total": storage.scale_bits_total,
        "compression_ratio": storage.compression_ratio, "kept_zero_tensors": len(out.masked_layers),
        "finetune_seconds": out.training.train_seconds if out.training else 0.0,
    })
    rep.headline.update({"test_accuracy": test.accuracy, "model_bytes": storage.bits / 8})
    if base_acc is None:
        rep.notes.append("no baseline report: the loss is measured against the stage's input model only")
    rep.notes.append("storage counts every parameter: quantized weights from their codes (dense or relative-index "
                     "CSR, whichever is smaller), 32 bits per scale / zero point, biases fp32")
    rows = []
    for name, layer in iter_quant_layers(q):
        w, a = layer.weight_spec, layer.act_spec
        st = next(t for t in storage.tensors if t.name == f"{name}.weight")
        lo, hi = out.act_ranges.get(name, (float("nan"), float("nan")))
        rows.append([name, f"{w.scheme} {w.bits}b" + (" per-channel" if w.per_channel else "") if w else "float",
                     f"{'s' if a.signed else 'u'}{a.bits}b" if a else "float", lo, hi, st.nonzeros, st.numel,
                     "CSR" if st.sparse else "dense", st.bits])
    for name, why in out.float_layers.items():
        rows.append([name, "float", "float", None, None, None, None, f"float: {why}", None])
    rep.add_table("Quantized layers (and those left float, with the reason)",
                  ["layer", "weights", "inputs", "input lo", "input hi", "non-zero codes", "size", "format", "bits"],
                  rows)
    rep.metrics["float_layers"] = sorted(out.float_layers)
    if out.training is not None and out.training.history:
        rep.add_table("Fine-tuning", ["epoch", "train loss", "val accuracy"],
                      [[h["epoch"], h["train_loss"], h["val_accuracy"]] for h in out.training.history])
    if cfg.sweep:
        _add_sweep(rep, bit_sweep(source, ctx.data, cfg, seed=ctx.seed))
    return StageResult(report=rep, model=q, publish={"quantized": q})

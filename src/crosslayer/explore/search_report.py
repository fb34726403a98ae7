"""The search's report: Pareto fronts (accuracy vs energy, latency, size) with the finished points, the sequential
flow's point and the baseline on the same axes, a parallel-coordinates view of every trial, and tables of the
per-layer configuration of each Pareto point. Drawn through :mod:`crosslayer.viz`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from crosslayer.explore.pareto import pareto_front
from crosslayer.explore.search import SearchResult, TrialRecord, memory_target
from crosslayer.report import Figure, Report

__all__ = ["AXES", "fill_report", "fronts_figure", "parallel_figure"]

AXES = {"energy": ("energy", "energy / inference (accelerator units, 16-bit MAC = 1)"),
        "latency": ("latency_ms", "latency / inference (ms)"), "size": ("size_bytes", "stored size (bytes)")}


def _complete(result: SearchResult) -> list[TrialRecord]:
    return [r for r in result.trials if r.state == "COMPLETE" and r.design is not None]


def fronts_figure(result: SearchResult, sequential: Mapping[str, float] | None = None) -> Figure:
    """Accuracy against energy, latency and size: every trial (validation subset), each pair's Pareto front,
    the finished Pareto points, the sequential flow and the baseline (test split)."""
    from crosslayer.viz import new_figure, to_figure

    fig, axes = new_figure(15.0, 4.4, ncols=3)
    done = _complete(result)
    for ax, (name, (key, label)) in zip(axes, AXES.items(), strict=True):
        xs = np.array([float(r.metrics[key]) for r in done])
        ys = np.array([100 * float(r.metrics["accuracy"]) for r in done])
        if len(done):
            ax.scatter(xs, ys, s=12, color="0.65", label="trials (validation subset)")
            front = pareto_front(np.stack([ys, xs], 1), [True, False])
            order = sorted(front, key=lambda i: xs[i])
            ax.step(xs[order], ys[order], where="post", color="C0", lw=1.3, label="trials' Pareto front")
        if result.final:
            ax.scatter([getattr(p.test, key) for p in result.final], [100 * p.test.accuracy for p in result.final],
                       marker="*", s=110, color="C3", zorder=3, label="Pareto set fine-tuned (test)")
        if result.chosen is not None:
            ax.scatter([getattr(result.chosen.test, key)], [100 * result.chosen.test.accuracy], marker="o", s=160,
                       facecolors="none", edgecolors="C3", lw=1.5, zorder=4, label="reported point")
        if sequential and key in sequential and "test_accuracy" in sequential:
            ax.scatter([sequential[key]], [100 * sequential["test_accuracy"]], marker="D", s=60, color="C2",
                       zorder=3, label="sequential flow (test)")
        base = result.baseline
        if key in base:
            ax.scatter([base[key]], [100 * base["test_accuracy"]], marker="x", s=60, color="k", zorder=3,
                       label="baseline (test)")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        lo = min([100 * base.get("test_accuracy", 1.0) - 4 * max(result.config.budget_pp, 0.5),
                  *[100 * p.test.accuracy for p in result.final]], default=90.0)
        ax.set_ylim(max(lo, float(ys.min()) if len(done) else lo) - 0.5, 100.0)
        ax.grid(alpha=0.3)
        ax.set_title(f"accuracy vs {name}")
    axes[0].legend(fontsize=7, loc="lower right")
    return to_figure(fig, "Pareto fronts: accuracy vs energy, latency and size",
                     "grey: every trial, scored on the validation subset after its short fine-tune; stars: the "
                     "Pareto set fine-tuned in full and measured once on the test split; diamond: the sequential "
                     "flow (prune, quantize, approximate); x: the unmodified baseline")


def _trial_row(r: TrialRecord, powers: Mapping[str, float], cuts: bool) -> list[float]:
    assert r.design is not None
    layers = list(r.design.layers.values())
    kept = [100 * float(np.mean(list(r.design.channels.values()) or [1.0]))] if cuts else []
    return [*kept, 100 * float(r.metrics["sparsity"]), float(np.mean([c.weight_bits for c in layers])),
            float(np.mean([c.act_bits for c in layers])),
            float(np.mean([powers.get(c.multiplier, 1.0) for c in layers])),
            float(r.metrics["loss_pp"]), float(r.metrics["energy"]), float(r.metrics["latency_ms"]),
            float(r.metrics["size_bytes"])]


def parallel_figure(result: SearchResult) -> Figure | None:
    """Parallel coordinates of every complete trial: what it chose (averaged over layers) and what it scored,
    coloured by its accuracy loss (the full per-parameter view is in optuna-dashboard)."""
    from crosslayer.approx import get_multiplier
    from crosslayer.viz import new_figure, plt, to_figure

    done = _complete(result)
    if len(done) < 2:
        return None
    powers = {m: get_multiplier(m).relative_power for m in result.space.multipliers}
    cuts = bool(result.space.channel_groups)
    names = [*(["channels kept %"] if cuts else []), "sparsity %", "weight bits", "act bits", "mult. power",
             "loss pp", "energy", "latency ms", "size B"]
    data = np.array([_trial_row(r, powers, cuts) for r in done])
    lo, hi = data.min(0), data.max(0)
    norm = (data - lo) / np.where(hi > lo, hi - lo, 1.0)
    fig, ax = new_figure(10.0, 4.4)
    loss = data[:, names.index("loss pp")]
    cmap = plt.get_cmap("viridis_r")
    span = max(float(np.percentile(loss, 90)), 1e-9)
    for row, value in sorted(zip(norm, loss, strict=True), key=lambda t: -t[1]):
        ax.plot(range(len(names)), row, color=cmap(min(value / span, 1.0)), lw=0.8, alpha=0.7)
    for i in range(len(names)):
        ax.text(i, -0.08, f"{lo[i]:.3g}", ha="center", va="top", fontsize=7)
        ax.text(i, 1.04, f"{hi[i]:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    ax.grid(axis="x", alpha=0.4)
    ax.set_title(f"{len(done)} trials (darker: smaller accuracy loss)")
    return to_figure(fig, "Trials in parallel coordinates",
                     "each line one trial; choices averaged over the layers (multiplier power relative to an exact "
                     "8x8 multiplier; channels kept, when searched, over the channel groups), figures on the "
                     "validation subset; axis ends give each axis' range")


def fill_report(rep: Report, result: SearchResult, sequential: Mapping[str, float] | None = None) -> None:
    """Metrics, figures and tables of a finished search."""
    cfg = result.config
    base = result.baseline
    rep.figures.append(fronts_figure(result, sequential))
    par = parallel_figure(result)
    if par is not None:
        rep.figures.append(par)
    c = result.chosen
    rep.metrics.update({"study": result.study, "storage": result.storage, "sampler": cfg.sampler,
                        "objectives": list(cfg.objectives), "trials": len(result.trials), "trial_states": result.counts,
                        "pareto_trials": len(result.pareto), "final_points": len(result.final),
                        "baseline_test_accuracy": base["test_accuracy"], "baseline_val_accuracy": base["val_accuracy"],
                        "baseline_energy": base["energy"], "baseline_latency_ms": base["latency_ms"],
                        "budget_pp": cfg.budget_pp, "accelerator": cfg.accelerator, "search_seconds": result.seconds})
    if c is not None:
        rep.metrics.update({"chosen_trial": c.trial, "test_accuracy": c.test.accuracy, "val_accuracy": c.val.accuracy,
                            "test_loss_pp": c.test_loss_pp, "val_loss_pp": c.val_loss_pp, "energy": c.test.energy,
                            "latency_ms": c.test.latency_ms, "size_bytes": c.test.size_bytes,
                            "energy_ratio_vs_baseline": c.test.energy / base["energy"],
                            "sparsity": c.test.sparsity, "design": c.design.to_json()})
        rep.headline.update({"test_accuracy": c.test.accuracy, "model_bytes": c.test.size_bytes,
                             "latency_ms": c.test.latency_ms})
        if sequential and "energy" in sequential:
            rep.metrics["energy_gain_vs_sequential"] = sequential["energy"] / c.test.energy
    knob = bool(cfg.memory_voltages)  # the weight-memory voltage column only when the search chose it
    if c is not None and knob and c.design.memory_voltage is not None:
        memory = memory_target(cfg)
        assert memory is not None
        rep.metrics.update({"memory_voltage": c.design.memory_voltage, "memory_curve": memory.curve.name,
                            "weight_memory_energy_ratio": memory.energy.access_energy_ratio(c.design.memory_voltage)})
    rep.add_table("Pareto set fine-tuned in full (validation chooses, test measured once)",
                  ["trial", "dataflow", "execution", *(["memory V"] if knob else []), "sparsity", "val loss pp",
                   "test loss pp", "test accuracy", "energy", "latency ms", "size B", "reported"],
                  [[p.trial, p.design.dataflow, p.design.execution, *([p.design.memory_voltage] if knob else []),
                    round(p.test.sparsity, 4), round(p.val_loss_pp, 3), round(p.test_loss_pp, 3), p.test.accuracy,
                    round(p.test.energy), round(p.test.latency_ms, 5), round(p.test.size_bytes),
                    "yes" if c is not None and p.trial == c.trial else ""]
                   for p in result.final])
    cuts = bool(result.space.channel_groups)  # the channels-kept column only when the search chose them
    rep.add_table("Per-layer configuration of each finished Pareto point",
                  ["trial", "layer", *(["channels kept"] if cuts else []), "sparsity", "weight bits", "act bits",
                   "multiplier"],
                  [[p.trial, n, *([p.design.channels.get(n, "")] if cuts else []), ch.sparsity, ch.weight_bits,
                    ch.act_bits, ch.multiplier]
                   for p in result.final for n, ch in p.design.layers.items()])
    by_number = {r.number: r for r in result.trials}
    rows: list[list[Any]] = []
    for n in result.pareto:
        r = by_number[n]
        assert r.design is not None
        rows.append([n, round(float(r.metrics["loss_pp"]), 3), round(float(r.metrics["energy"])),
                     round(float(r.metrics["latency_ms"]), 5), round(float(r.metrics["size_bytes"])),
                     r.design.dataflow, *([r.design.memory_voltage] if knob else []),
                     dataclasses.replace(r.design, memory_voltage=None).summary()])
    rep.add_table("Pareto trials (validation subset, short fine-tune)",
                  ["trial", "loss pp", "energy", "latency ms", "size B", "dataflow", *(["memory V"] if knob else []),
                   "per-layer choices"], rows)
    rep.notes.extend(result.notes)
    rep.notes.append(f"trials scored on {cfg.trial_val_limit or 'all'} validation images after {cfg.trial_epochs} "
                     f"epoch(s) of quantization-aware fine-tuning on {cfg.trial_train_limit or 'all'} training images; "
                     f"finished points fine-tuned {cfg.final_epochs} epoch(s) on "
                     f"{cfg.final_train_limit or 'all'} training images; the test split chose nothing")
    if knob:
        memory = memory_target(cfg)
        assert memory is not None
        rep.notes.append(f"weight-memory voltage chosen among {', '.join(f'{v:g}' for v in cfg.memory_voltages)} V "
                         f"(BER curve {memory.curve.name}, nominal {memory.curve.nominal_v:g} V): accuracy with the "
                         f"weights read through chip {cfg.memory_chip_seed}'s faults at that voltage"
                         f"{', fine-tuned with them (MATIC)' if cfg.memory_adapt else ''}; energy with the "
                         f"{cfg.memory_buffer} buffer's per-access energy scaled to it")
    rep.notes.append(f"study {result.study!r} in {result.storage}; open it with optuna-dashboard (docs/search.md)")

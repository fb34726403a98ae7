"""Plots of the exploration step: the survey's Fig. 7 and Fig. 8 (drawn with :mod:`crosslayer.viz`)."""

from __future__ import annotations

from crosslayer.explore.sweep import DesignPoint
from crosslayer.report import Figure

__all__ = ["fig7", "fig8"]


def fig7(points: list[DesignPoint], baseline: float) -> Figure:
    """Accuracy vs. compression of the float pruned points, one line per scheme (survey Fig. 7)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    for scheme in sorted({p.scheme for p in points}):
        pts = sorted((p for p in points if p.scheme == scheme and p.weight_bits == 32), key=lambda p: p.sparsity)
        ax.plot([100 * p.sparsity for p in pts], [100 * p.test_accuracy for p in pts], marker="o", label=scheme)
    ax.axhline(100 * baseline, color="grey", ls="--", lw=1, label="baseline")
    ax.set_xlabel("weights pruned (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Pruning schemes (fine-tuned)")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_figure(fig, "Accuracy vs. pruning for the three schemes (cf. survey Fig. 7)")


def fig8(points: list[DesignPoint], front: list[int]) -> Figure:
    """Accuracy vs. storage of every point, coloured by bit width, Pareto front drawn (survey Fig. 8)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    for b in sorted({p.weight_bits for p in points}):
        pts = [p for p in points if p.weight_bits == b]
        ax.scatter([p.storage_bits / 8e3 for p in pts], [100 * p.test_accuracy for p in pts], s=18,
                   label="float" if b == 32 else f"{b}-bit")
    fr = [points[i] for i in front]
    fr.sort(key=lambda p: p.storage_bits)
    ax.plot([p.storage_bits / 8e3 for p in fr], [100 * p.test_accuracy for p in fr], "k-", lw=1.2,
            label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("weight storage (KB, indices included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Pruning × quantization design space")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_figure(fig, "Pareto front of pruning × quantization (cf. survey Fig. 8)")

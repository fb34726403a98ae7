"""Report figures of the approximate stage (matplotlib only through :mod:`crosslayer.viz`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crosslayer.approx.select import SweepPoint
from crosslayer.report import Figure

__all__ = ["accuracy_vs_med", "accuracy_vs_power"]


def accuracy_vs_med(points: Sequence[SweepPoint], reference: float, title: str = "Accuracy vs multiplier MED",
                    caption: str = "") -> Figure:
    """Like the survey's Fig. 9: accuracy against the uniform-input MED of each multiplier, one series for
    all layers approximated and one per layer approximated alone; the exact int8 accuracy as a line."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure(7.0, 4.4)
    groups: dict[str, list[SweepPoint]] = {}
    for p in points:
        groups.setdefault(p.layer, []).append(p)
    for layer, pts in sorted(groups.items(), key=lambda kv: (kv[0] != "*", kv[0])):
        pts = sorted(pts, key=lambda p: p.med)
        xs = [max(p.med, 0.1) for p in pts]
        label = "all layers" if layer == "*" else f"{layer} only"
        style = dict(marker="o", linewidth=2.0) if layer == "*" else dict(marker=".", linewidth=1.0, alpha=0.8)
        ax.plot(xs, [100 * p.accuracy for p in pts], label=label, **style)
        if layer == "*":
            for p, x in zip(pts, xs, strict=True):
                ax.annotate(p.multiplier, (x, 100 * p.accuracy), fontsize=7, xytext=(2, 3),
                            textcoords="offset points")
    ax.axhline(100 * reference, color="grey", linestyle="--", linewidth=1, label="exact int8")
    ax.set_xscale("log")
    ax.set_xlabel("MED (uniform 8-bit operands; exact = 0 drawn at 0.1)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return to_figure(fig, title, caption)


def accuracy_vs_power(points: Sequence[SweepPoint], reference: float, cured: Sequence[Any] = (),
                      title: str = "Accuracy vs multiplier power", caption: str = "") -> Figure:
    """Accuracy with every layer on one multiplier against its relative power (exact = 1); curable designs
    (:class:`crosslayer.approx.cured.CuredPoint`) drawn beside them, cured (star) and uncured (cross)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure(7.0, 4.4)
    pts = [p for p in points if p.layer == "*"]
    ax.scatter([p.relative_power for p in pts], [100 * p.accuracy for p in pts], marker="o", label="multipliers")
    for p in pts:
        ax.annotate(p.multiplier, (p.relative_power, 100 * p.accuracy), fontsize=7, xytext=(2, 3),
                    textcoords="offset points")
    for c in cured:
        ax.scatter([c.cost.relative_power], [100 * c.cured_accuracy], marker="*", s=160, color="C2", zorder=3,
                   label=f"{c.design} cured")
        ax.scatter([c.cost.supply_ratio ** 2], [100 * c.uncured_accuracy], marker="x", s=60, color="C3", zorder=3,
                   label=f"{c.design} uncured")
    ax.axhline(100 * reference, color="grey", linestyle="--", linewidth=1, label="exact int8")
    ax.set_xlabel("relative multiplier power (exact = 1; estimates, see the catalog and approx.cured)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return to_figure(fig, title, caption)

"""The report's first figure: the flow at a glance, the headline figures of every stage side by side."""

from __future__ import annotations

from collections.abc import Sequence

from crosslayer.report import HEADLINE_KEYS, Figure, Report
from crosslayer.viz import new_figure, to_figure

__all__ = ["glance_figure"]


def glance_figure(reports: Sequence[Report]) -> Figure | None:
    """One panel per headline figure that at least two stages measured (accuracy, size, energy, ...), its
    value after each of those stages; None when no figure was measured twice."""
    keys = [k for k in HEADLINE_KEYS if sum(k in r.headline for r in reports) >= 2]
    if not keys:
        return None
    fig, axes = new_figure(max(4.0, 3.2 * len(keys)), 3.4, ncols=len(keys))
    for ax, key in zip(axes if len(keys) > 1 else [axes], keys, strict=True):
        stages = [r.stage for r in reports if key in r.headline]
        values = [r.headline[key] for r in reports if key in r.headline]
        scale = 100.0 if key in ("test_accuracy", "robust_accuracy") else 1.0
        ax.bar(range(len(values)), [v * scale for v in values], color="#4c72b0")
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(stages, rotation=45, ha="right", fontsize=8)
        label = HEADLINE_KEYS[key] + (" (%)" if scale == 100.0 else "")
        ax.set_title(label, fontsize=9)
        if key in ("model_bytes", "energy_uj", "latency_ms") and max(values) > 10 * max(min(values), 1e-12):
            ax.set_yscale("log")
        if key == "test_accuracy":
            lo = min(values) * scale
            ax.set_ylim(max(0.0, lo - 5.0), 100.0)
        ax.grid(True, axis="y", alpha=0.3)
    return to_figure(fig, "The flow at a glance", "each bar: the figure measured after that stage")

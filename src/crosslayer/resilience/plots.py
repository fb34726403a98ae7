"""Report figures of the resilience campaigns (drawn on axes from :mod:`crosslayer.viz`)."""

from __future__ import annotations

import math

from crosslayer.report import Figure
from crosslayer.resilience.campaign import CellResult
from crosslayer.resilience.multi import TrialStats

__all__ = ["ber_figure", "heatmap_figure"]


def heatmap_figure(cells: list[CellResult], title: str = "Single-bit-flip sensitivity (layer x bit)") -> Figure:
    """Mean accuracy drop (pp) per layer (rows) and bit position (columns, MSB left)."""
    from crosslayer.viz import new_figure, to_figure

    layers = list(dict.fromkeys(c.layer for c in cells))
    bits = sorted({c.bit for c in cells}, reverse=True)
    grid = [[math.nan] * len(bits) for _ in layers]
    for c in cells:
        grid[layers.index(c.layer)][bits.index(c.bit)] = c.mean_drop_pp
    fig, ax = new_figure(max(5.0, 0.45 * len(bits) + 2.5), max(2.5, 0.5 * len(layers) + 1.5))
    im = ax.imshow(grid, aspect="auto", cmap="magma_r", vmin=0.0)
    ax.set_xticks(range(len(bits)), [str(b) for b in bits])
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel("bit position (MSB left)")
    ax.set_title(title)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7, color="tab:blue")
    fig.colorbar(im, ax=ax, label="mean accuracy drop (pp)")
    return to_figure(fig, title, "Each cell: mean test-accuracy drop of single bit flips at that bit of "
                                 "randomly drawn weights of that layer (statistical fault injection).")


def ber_figure(stats: list[TrialStats]) -> Figure:
    """Accuracy drop vs weight-memory bit-error rate, one line per target layer (and all layers)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    for target in dict.fromkeys(s.target for s in stats):
        mine = sorted((s for s in stats if s.target == target), key=lambda s: s.level)
        xs = [s.level for s in mine]
        ax.errorbar(xs, [s.mean_drop_pp for s in mine], marker="o", capsize=3, label=target,
                    yerr=[[s.mean_drop_pp - s.drop_ci[0] for s in mine], [s.drop_ci[1] - s.mean_drop_pp for s in mine]])
    ax.set_xscale("log")
    ax.set_xlabel("bit-error rate of the weight memory")
    ax.set_ylabel("accuracy drop (pp)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    title = "Weight-memory bit errors (MATIC-style BER)"
    return to_figure(fig, title, "Mean over seeded trials with Student-t confidence intervals.")

"""Report figures of the hardware model (matplotlib only through :mod:`crosslayer.viz`)."""

from __future__ import annotations

from collections.abc import Mapping

from crosslayer.hw.mapping import LEVELS
from crosslayer.hw.network import NetworkCost
from crosslayer.report import Figure

__all__ = ["dataflow_comparison_figure", "layer_breakdown_figure", "level_breakdown_figure"]


def level_breakdown_figure(costs: Mapping[str, NetworkCost]) -> Figure:
    """Stacked bars: energy per memory level for each (model, dataflow)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure(7.5, 4.2)
    labels: list[str] = []
    rows: list[dict[str, float]] = []
    for model_name, nc in costs.items():
        for df in (*nc.dataflows, "best"):
            labels.append(f"{model_name}\n{df}")
            rows.append(nc.breakdown(df))
    totals = [sum(r.values()) or 1.0 for r in rows]
    bottom = [0.0] * len(rows)
    for lvl in LEVELS:
        vals = [100.0 * r[lvl] / t for r, t in zip(rows, totals, strict=True)]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=lvl)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for i, t in enumerate(totals):
        ax.text(i, 101, f"{t:.3g}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("share of energy (%)")
    ax.set_ylim(0, 110)
    ax.set_title("Energy per level and dataflow")
    ax.legend(fontsize=7, loc="lower right")
    return to_figure(fig, "Energy breakdown per memory level",
                     "Share of the energy per inference spent in DRAM, global buffer, inter-PE network, register "
                     "file and MACs; the total (MAC = 1) is printed above each bar; 'best' picks each layer's "
                     "dataflow.")


def layer_breakdown_figure(nc: NetworkCost, dataflow: str = "best") -> Figure:
    """Stacked bars: energy per level for each layer under one dataflow (or the per-layer best)."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure(7.0, 4.0)
    costs = nc.costs(dataflow)
    bottom = [0.0] * len(costs)
    for lvl in LEVELS:
        vals = [c.energy[lvl] for c in costs]
        ax.bar(range(len(costs)), vals, bottom=bottom, label=lvl)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(costs)))
    ax.set_xticklabels([f"{c.layer}\n{c.dataflow}" for c in costs], fontsize=7)
    ax.set_ylabel("energy (MAC = 1)")
    ax.set_title(f"Energy per layer ({dataflow})")
    ax.legend(fontsize=7)
    return to_figure(fig, f"Energy per layer ({dataflow})",
                     "Per-layer normalised energy stacked by memory level, with each layer's dataflow.")


def dataflow_comparison_figure(current: NetworkCost, baseline: NetworkCost | None) -> Figure:
    """Energy and latency of each dataflow, for the current and (when given) the dense baseline model."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure(7.0, 4.0)
    dfs = [*current.dataflows, "best"]
    width = 0.4 if baseline is not None else 0.8
    xs = list(range(len(dfs)))
    ax.bar([x - width / 2 if baseline else x for x in xs], [current.energy(d) for d in dfs], width,
           label="current model: energy")
    if baseline is not None:
        ax.bar([x + width / 2 for x in xs], [baseline.energy(d) for d in dfs], width, label="dense baseline: energy")
    ax.set_ylabel("energy per inference (MAC = 1)")
    ax2 = ax.twinx()
    ax2.plot(xs, [current.latency_s(d) * 1e3 for d in dfs], "ko-", label="current: latency")
    if baseline is not None:
        ax2.plot(xs, [baseline.latency_s(d) * 1e3 for d in dfs], "ks--", label="baseline: latency")
    ax2.set_ylabel("latency (ms)")
    ax.set_xticks(xs)
    ax.set_xticklabels(dfs)
    ax.set_title(f"Dataflow comparison on {current.accelerator}")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)      # head room for the legend
    ax2.set_ylim(0, ax2.get_ylim()[1] * 1.4)
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", ncol=2)
    return to_figure(fig, "Dataflow comparison",
                     "Bars: energy per inference; lines: latency per inference.")

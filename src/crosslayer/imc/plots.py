"""Plots of the in-memory computing step (drawn with :mod:`crosslayer.viz`; the verbs never draw)."""

from __future__ import annotations

from crosslayer.imc.evaluation import SweepPoint
from crosslayer.report import Figure

__all__ = ["energy_figure", "sweep_figure"]


def sweep_figure(std: list[SweepPoint], aware: list[SweepPoint], *, title: str, xlabel: str, caption: str) -> Figure:
    """Mean and std over chips of the conventional and the variation-aware model along one sweep."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    for name, pts in (("conventional training", std), ("variation-aware training", aware)):
        ax.errorbar([p.value for p in pts], [p.mean for p in pts], yerr=[p.std for p in pts], marker="o",
                    capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return to_figure(fig, title, caption)


def energy_figure(names: list[str], parts: dict[str, list[float]]) -> Figure:
    """Stacked crossbar energy per layer (array reads, DAC, ADC), in nJ."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    bottom = [0.0] * len(names)
    for label, vals in parts.items():
        ax.bar(names, [v / 1e3 for v in vals], bottom=[b / 1e3 for b in bottom], label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("energy per inference (nJ)")
    ax.set_title("Crossbar energy per layer")
    ax.legend()
    return to_figure(fig, "Crossbar energy per layer", "array reads, DAC and ADC conversions (ISAAC unit figures)")

"""Plotting. The only package that imports matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from crosslayer.report import Figure

__all__ = ["line_plot", "new_figure", "plt", "to_figure"]


def new_figure(width: float = 6.4, height: float = 4.0, ncols: int = 1) -> tuple[Any, Any]:
    """A fresh figure and its axes (an array of ``ncols`` axes side by side when ``ncols > 1``); close it
    through :func:`to_figure`."""
    fig, ax = plt.subplots(1, ncols, figsize=(width, height), dpi=100)
    return fig, ax


def to_figure(fig: Any, title: str, caption: str = "") -> Figure:
    """Render a matplotlib figure to PNG bytes wrapped as a report ``Figure`` and close it."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Figure(title=title, png=buf.getvalue(), caption=caption)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str,
              ylabel: str, caption: str = "", logx: bool = False, marker: str = "o") -> Figure:
    """Several named (x, y) series on one axes."""
    fig, ax = new_figure()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker=marker, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return to_figure(fig, title, caption)

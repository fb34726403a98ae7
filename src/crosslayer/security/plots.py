"""Plots of the security step (drawn with :mod:`crosslayer.viz`; the verbs never draw)."""

from __future__ import annotations

from crosslayer.report import Figure
from crosslayer.security.robustness import RobustnessCurves

__all__ = ["robustness_figure"]


def robustness_figure(curves: RobustnessCurves, attack_name: str) -> Figure:
    """Robust accuracy vs epsilon, one line per model of the flow."""
    from crosslayer.viz import line_plot

    return line_plot({m: (curves.eps, a) for m, a in curves.accuracy.items()},
                     title=f"Robust accuracy vs epsilon ({attack_name})", xlabel="epsilon (L-inf)", ylabel="accuracy",
                     caption="Does compression make the model more or less robust? Same images and attack for every "
                     "model of the flow.")

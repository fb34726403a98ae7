"""Report figures of the memory stage: accuracy against the weight-memory voltage (conventional and
memory-adapted models, mean and spread over chips) and energy against the voltage (matplotlib only
through :mod:`crosslayer.viz`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crosslayer.hw.voltage import SramVoltageModel
from crosslayer.memory.adapt import ChipAccuracy
from crosslayer.memory.curves import BerCurve
from crosslayer.report import Figure

__all__ = ["accuracy_vs_voltage", "energy_vs_voltage"]


def accuracy_vs_voltage(series: Mapping[str, Sequence[ChipAccuracy]], reference: float, budget_pp: float,
                        curve: BerCurve, *, caption: str = "",
                        title: str = "Accuracy vs weight-memory voltage") -> Figure:
    """Mean accuracy (error bar: std over chips) per series against the voltage; the reference and the
    budget as lines; the curve's BER on a second axis."""
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure(7.0, 4.4)
    for name, pts in series.items():
        pts = sorted(pts, key=lambda p: p.voltage)
        if pts:
            ax.errorbar([p.voltage for p in pts], [100 * p.mean for p in pts], yerr=[100 * p.std for p in pts],
                        marker="o", capsize=3, label=name)
    ax.axhline(100 * reference, color="grey", linestyle="--", linewidth=1, label="fault-free")
    ax.axhline(100 * reference - budget_pp, color="red", linestyle=":", linewidth=1, label=f"budget -{budget_pp:g} pp")
    ax.set_xlabel(f"weight-memory supply (V), curve {curve.name}")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    vs = sorted({p.voltage for pts in series.values() for p in pts})
    if vs:
        twin = ax.twinx()
        twin.plot(vs, [max(curve.ber(v), 1e-12) for v in vs], color="black", alpha=0.3, linewidth=1)
        twin.set_yscale("log")
        twin.set_ylabel("bit-error rate (grey line)")
    ax.legend(fontsize=8, loc="lower right")
    return to_figure(fig, title, caption)


def energy_vs_voltage(model: SramVoltageModel, voltages: Sequence[float], marks: Mapping[str, float | None], *,
                      caption: str = "", title: str = "Weight-memory energy vs voltage") -> Figure:
    """Read energy, leakage power and total energy per access relative to nominal, with the chosen
    voltages marked."""
    from crosslayer.viz import new_figure, to_figure

    vs = sorted(set(voltages))
    fig, ax = new_figure(7.0, 4.2)
    ax.plot(vs, [model.read_energy_ratio(v) for v in vs], marker="o", label="read energy (CV^2)")
    ax.plot(vs, [model.leakage_power_ratio(v) for v in vs], marker=".", label="leakage power")
    ax.plot(vs, [model.access_energy_ratio(v) for v in vs], linewidth=2,
            label=f"energy per access (leakage share {model.leakage_share:g})")
    for i, (name, v) in enumerate(marks.items()):
        if v is not None:
            ax.axvline(v, color=f"C{i + 3}", linestyle="--", linewidth=1, label=f"{name}: {v:g} V")
    ax.set_xlabel("weight-memory supply (V)")
    ax.set_ylabel(f"relative to {model.nominal_v:g} V")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return to_figure(fig, title, caption)

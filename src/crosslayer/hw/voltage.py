"""Supply voltage of an on-chip SRAM in the cost model: read energy and leakage as functions of the
voltage, and an :class:`~crosslayer.hw.accelerator.Accelerator` whose weight buffer runs at that voltage.

Energy per access at a fixed clock, relative to the nominal voltage ``Vn``::

    E(V) / E(Vn) = (1 - s) (V / Vn)^2  +  s (V / Vn) exp(k (V - Vn))

- the dynamic (read / write) part switches the bit-line and word-line capacitances through the supply,
  ``E = C V^2`` (Rabaey, Chandrakasan, Nikolic, *Digital Integrated Circuits*, 2nd ed., 2003, Sec. 5.4);
- the leakage part is the leakage power ``V I_leak(V)`` over one cycle; subthreshold leakage falls
  exponentially with the drain voltage through drain-induced barrier lowering,
  ``I_sub ~ exp(eta V / (n v_T))`` (Roy, Mukhopadhyay, Mahmoodi-Meimand, "Leakage current mechanisms and
  leakage reduction techniques in deep-submicrometer CMOS circuits", Proc. IEEE 91(2), 2003), so
  ``k = eta / (n v_T)``. ``eta`` (DIBL coefficient), ``n`` (subthreshold slope factor) and ``s`` (the
  leakage share of the access energy at ``Vn``) are technology figures: the defaults (eta 0.1, n 1.5,
  v_T 25.9 mV at 300 K, s 0) are typical values, not measurements; set them from the memory's datasheet
  or compiler. With ``s = 0`` the model is the CV^2 law alone.

The accelerator model has one global buffer (``energy.glb``) and per-PE register files (``energy.rf``);
:func:`at_memory_voltage` scales the chosen level's per-access energy (``dataclasses.replace``, no new
field), i.e. it models a design whose buffer at that level runs at ``V``. Plain Python, no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from crosslayer.hw.accelerator import ENERGY_KEYS, Accelerator
from crosslayer.hw.errors import HardwareConfigError

__all__ = ["SramVoltageModel", "at_memory_voltage", "memory_energy_ratio"]

THERMAL_VOLTAGE_300K = 0.02585  # kT/q at 300 K, volts


def _finite_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise HardwareConfigError(f"{name} = {value!r} must be a finite positive number")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class SramVoltageModel:
    """Per-access energy of an SRAM against its supply voltage (see the module docstring).

    ``nominal_v``: the voltage the accelerator's per-access energies were given at;
    ``leakage_share``: leakage's share of the access energy at ``nominal_v`` (0 = dynamic energy only);
    ``dibl``, ``slope_factor``, ``thermal_v``: the leakage law's eta, n and v_T.
    """

    nominal_v: float = 1.0
    leakage_share: float = 0.0
    dibl: float = 0.1
    slope_factor: float = 1.5
    thermal_v: float = THERMAL_VOLTAGE_300K

    def __post_init__(self) -> None:
        _finite_positive("nominal_v", self.nominal_v)
        if isinstance(self.leakage_share, bool) or not isinstance(self.leakage_share, (int, float)) or not (
                math.isfinite(self.leakage_share) and 0.0 <= self.leakage_share <= 1.0):
            raise HardwareConfigError(f"leakage_share = {self.leakage_share!r}; allowed [0, 1]")
        for name in ("dibl", "slope_factor", "thermal_v"):
            _finite_positive(name, getattr(self, name))

    def check_voltage(self, voltage: float) -> float:
        """``voltage`` as a float, or a :class:`HardwareConfigError` if it is not in ``(0, nominal_v]``."""
        v = _finite_positive("voltage", voltage)
        if v > self.nominal_v * (1 + 1e-9):
            raise HardwareConfigError(f"voltage = {v:g} V is above the nominal {self.nominal_v:g} V; "
                                      f"allowed (0, {self.nominal_v:g}]")
        return v

    def read_energy_ratio(self, voltage: float) -> float:
        """Dynamic energy per access relative to nominal: ``(V / Vn)^2``."""
        return (self.check_voltage(voltage) / self.nominal_v) ** 2

    def leakage_power_ratio(self, voltage: float) -> float:
        """Leakage power relative to nominal: ``(V / Vn) exp(eta (V - Vn) / (n v_T))``."""
        v = self.check_voltage(voltage)
        k = self.dibl / (self.slope_factor * self.thermal_v)
        return (v / self.nominal_v) * math.exp(k * (v - self.nominal_v))

    def access_energy_ratio(self, voltage: float) -> float:
        """Total energy per access (dynamic plus one cycle of leakage) relative to nominal."""
        s = self.leakage_share
        return (1 - s) * self.read_energy_ratio(voltage) + s * self.leakage_power_ratio(voltage)


def memory_energy_ratio(voltage: float, model: SramVoltageModel | None = None) -> float:
    """``E(V) / E(Vn)`` of one access under ``model`` (default: the CV^2 law at a 1.0 V nominal)."""
    return (model or SramVoltageModel()).access_energy_ratio(voltage)


def at_memory_voltage(acc: Accelerator, voltage: float, model: SramVoltageModel | None = None, *,
                      level: str = "glb") -> Accelerator:
    """A copy of ``acc`` whose ``level`` buffer (``glb`` or ``rf``) costs ``E(V)/E(Vn)`` times its nominal
    per-access energy; every other field is unchanged."""
    if level not in ("glb", "rf"):
        allowed = ", ".join(k for k in ENERGY_KEYS if k in ("glb", "rf"))
        raise HardwareConfigError(f"memory level {level!r} cannot be voltage-scaled; allowed: {allowed}")
    ratio = memory_energy_ratio(voltage, model)
    energy = dataclasses.replace(acc.energy, **{level: acc.energy.of(level) * ratio})
    return dataclasses.replace(acc, energy=energy)

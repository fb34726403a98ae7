"""SRAM bit-error rate (BER) as a function of the supply voltage: a published measured curve, a
Gaussian cell-Vmin (probit) model fitted to it, and user-supplied tables.

Built-in curves (``builtin_curve(name)``, names in :data:`BUILTIN_CURVES`):

- ``kc705b-28nm``: measured block-RAM failures of a Xilinx KC705 board (Kintex-7 XC7K325T, TSMC 28 nm
  HPL, BRAM supply ``VCCBRAM``, nominal 1.0 V) undervolted from 0.59 V to 0.53 V at room temperature.
  Source: B. Salami, O. S. Unsal, A. Cristal Kestelman, "Comprehensive Evaluation of Supply Voltage
  Underscaling in FPGA on-Chip Memories", MICRO 2018, and the authors' raw dumps
  (github.com/behzadsalami/FPGA-BRAMs-Undervoltig-Study, ``Fault Characterization/KC705-B/RowData``,
  commit a8ba8a4). Each dump is the read-back of all 445 BRAMs (1024 x 32 data bits each, 14,581,760 bits)
  written with all ones; the failing bits are the zeros read back: 2, 8, 26, 62, 252, 690 and 2,274 at
  0.59 ... 0.53 V. Every bit failing at a voltage also fails at the next lower one (100 % down to 0.55 V,
  98-99 % below), i.e. the failures are persistent and nested per chip, what :mod:`crosslayer.memory.chip`
  models. Above 0.59 V the authors report no observable fault down to their guardband ``Vmin`` = 0.61 V
  (Salami et al., "Fault Characterization Through FPGA Undervolting", FPL 2018), so the curve is 0 from
  0.61 V up and falls linearly to 0 between 0.59 and 0.61 V; below 0.53 V the FPGA stops working
  (``Vcrash``) and the curve refuses to answer. The dumps show fail-to-0 (1 -> 0) bits only, so the curve's
  default fault mode is ``stuck0``.
- ``kc705b-28nm-probit``: the same points through the usual statistical SRAM model: a cell fails when
  the supply is below its own minimum operating voltage, and cell Vmins are normally distributed (they
  follow from random threshold-voltage mismatch, which is Gaussian: Pelgrom, Duinmaijer, Welbers,
  "Matching properties of MOS transistors", IEEE JSSC 24(5), 1989), so ``BER(V) = Phi((mu - V) / sigma)``.
  ``mu`` and ``sigma`` are the least-squares line through ``(V, Phi^-1(BER))`` of the measured points
  (:func:`probit_fit`). Below 0.53 V it *extrapolates* what an ASIC SRAM of that technology would do,
  not what this FPGA does (its logic crashes there); it reaches ``floor_v`` = 0.40 V.

User tables (:func:`load_curve`): a CSV / text file of ``voltage, ber`` rows (``#`` comments, an optional
header line), voltages strictly increasing, BERs in [0, 1] and not increasing with voltage; the BER is
interpolated log-linearly between rows (linearly next to a zero), 0 above the last row when that row is 0,
and a voltage outside the table is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Literal

from crosslayer.errors import ConfigError, DataError

__all__ = ["BUILTIN_CURVES", "FAULT_MODES", "BerCurve", "builtin_curve", "check_voltage", "load_curve",
           "probit_fit", "resolve_curve"]

FAULT_MODES = ("stuck", "stuck0", "stuck1", "flip")
# BERs whose voltages make a probit curve's default sweep: decades, then finer where networks start to fail
GRID_BERS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1)
FaultMode = Literal["stuck", "stuck0", "stuck1", "flip"]
_NORMAL = NormalDist()

# KC705-B dumps (see the module docstring): voltage -> failing bits out of _KC705B_BITS.
_KC705B_BITS = 445 * 1024 * 32
_KC705B_FAULTS = {0.53: 2274, 0.54: 690, 0.55: 252, 0.56: 62, 0.57: 26, 0.58: 8, 0.59: 2}
_KC705B_VMIN = 0.61  # no observable fault from here up (Salami et al., FPL 2018)
_KC705B_SOURCE = ("Salami, Unsal, Cristal Kestelman, MICRO 2018 / FPL 2018: Xilinx KC705 (Kintex-7 XC7K325T, "
                  "28 nm) BRAM undervolting dumps, github.com/behzadsalami/FPGA-BRAMs-Undervoltig-Study")


def check_voltage(value: float, name: str = "voltage") -> float:
    """A finite, positive voltage as a float, else a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} = {value!r} is not a voltage; give a finite number of volts > 0")
    return float(value)


@dataclass(frozen=True)
class BerCurve:
    """BER against supply voltage: a ``table`` (``voltages`` ascending, ``bers``) or a ``probit`` law
    ``Phi((mu - V) / sigma)``, usable on ``[floor_v, nominal_v]``; ``node`` names the technology,
    ``source`` the publication, ``fault_mode`` how its failing bits read (see :data:`FAULT_MODES`)."""

    name: str
    kind: Literal["table", "probit"]
    nominal_v: float
    floor_v: float
    node: str
    source: str
    fault_mode: FaultMode = "stuck"
    voltages: tuple[float, ...] = ()
    bers: tuple[float, ...] = ()
    mu: float = 0.0
    sigma: float = 1.0

    def __post_init__(self) -> None:
        check_voltage(self.nominal_v, f"curve {self.name!r} nominal voltage")
        check_voltage(self.floor_v, f"curve {self.name!r} lowest voltage")
        if self.floor_v > self.nominal_v:
            raise ConfigError(f"curve {self.name!r}: lowest voltage {self.floor_v:g} V is above the nominal "
                              f"{self.nominal_v:g} V")
        if self.fault_mode not in FAULT_MODES:
            raise ConfigError(f"curve {self.name!r}: fault mode {self.fault_mode!r}; allowed {', '.join(FAULT_MODES)}")
        if self.kind == "table":
            _check_table(self.voltages, self.bers, f"curve {self.name!r}")
        elif not (math.isfinite(self.mu) and math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"curve {self.name!r}: probit law needs finite mu and sigma > 0")

    def ber(self, voltage: float) -> float:
        """The bit-error rate at ``voltage`` (a :class:`ConfigError` outside ``[floor_v, nominal_v]``)."""
        v = check_voltage(voltage)
        if v < self.floor_v - 1e-12 or v > self.nominal_v + 1e-12:
            raise ConfigError(f"voltage = {v:g} V is outside curve {self.name!r}'s range; allowed "
                              f"[{self.floor_v:g}, {self.nominal_v:g}] V")
        if self.kind == "probit":
            return _NORMAL.cdf((self.mu - v) / self.sigma)
        return _interpolate(self.voltages, self.bers, v)

    def bers_at(self, voltages: Sequence[float]) -> list[float]:
        return [self.ber(v) for v in voltages]

    def default_grid(self) -> tuple[float, ...]:
        """Voltages a sweep visits by default: the table's rows in range (with the nominal voltage), or
        for a probit law the voltages where the BER crosses :data:`GRID_BERS` (rounded to 10 mV)."""
        if self.kind == "table":
            pts = {round(v, 4) for v in self.voltages if self.floor_v <= v <= self.nominal_v}
        else:
            pts = {round(self.mu - self.sigma * _NORMAL.inv_cdf(b), 2) for b in GRID_BERS}
            pts = {v for v in pts if self.floor_v <= v <= self.nominal_v}
        return tuple(sorted(pts | {self.nominal_v}, reverse=True))


def _check_table(voltages: Sequence[float], bers: Sequence[float], where: str) -> None:
    if len(voltages) != len(bers) or len(voltages) < 2:
        raise DataError(f"{where}: needs at least two (voltage, ber) rows of equal length")
    for v, b in zip(voltages, bers, strict=True):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise DataError(f"{where}: voltage {v!r} is not a finite positive number")
        if not (isinstance(b, (int, float)) and math.isfinite(b) and 0.0 <= b <= 1.0):
            raise DataError(f"{where}: BER {b!r} at {v:g} V is not a rate in [0, 1]")
    for i in range(1, len(voltages)):
        if voltages[i] <= voltages[i - 1]:
            raise DataError(f"{where}: voltages must be strictly increasing (sorted, no repeats); "
                            f"row {i + 1} has {voltages[i]:g} V after {voltages[i - 1]:g} V")
        if bers[i] > bers[i - 1]:
            raise DataError(f"{where}: the BER rises with the voltage ({bers[i - 1]:g} at {voltages[i - 1]:g} V, "
                            f"{bers[i]:g} at {voltages[i]:g} V); a memory fails less at a higher supply")


def _interpolate(vs: Sequence[float], bs: Sequence[float], v: float) -> float:
    if v >= vs[-1]:
        if v > vs[-1] + 1e-12 and bs[-1] > 0:
            raise ConfigError(f"voltage = {v:g} V is above the table's last row ({vs[-1]:g} V, BER {bs[-1]:g}); "
                              "add a row with BER 0 to say where the memory becomes fault-free")
        return 0.0 if v > vs[-1] else float(bs[-1])
    if v < vs[0] - 1e-12:
        raise ConfigError(f"voltage = {v:g} V is below the table's first row ({vs[0]:g} V)")
    i = max(j for j in range(len(vs)) if vs[j] <= v + 1e-12)
    if i == len(vs) - 1 or abs(vs[i] - v) <= 1e-12:
        return float(bs[i])
    t = (v - vs[i]) / (vs[i + 1] - vs[i])
    lo, hi = bs[i], bs[i + 1]
    if lo > 0 and hi > 0:
        return math.exp((1 - t) * math.log(lo) + t * math.log(hi))
    return (1 - t) * lo + t * hi


def probit_fit(voltages: Sequence[float], bers: Sequence[float]) -> tuple[float, float]:
    """``(mu, sigma)`` of ``BER = Phi((mu - V) / sigma)``: least squares of ``Phi^-1(BER)`` on ``V`` over the
    rows with ``0 < BER < 1`` (at least two, at different voltages)."""
    pts = [(float(v), _NORMAL.inv_cdf(float(b))) for v, b in zip(voltages, bers, strict=True) if 0.0 < b < 1.0]
    if len({v for v, _ in pts}) < 2:
        raise DataError("a probit fit needs at least two rows with 0 < BER < 1 at different voltages")
    n = len(pts)
    mv = sum(v for v, _ in pts) / n
    mz = sum(z for _, z in pts) / n
    slope = sum((v - mv) * (z - mz) for v, z in pts) / sum((v - mv) ** 2 for v, _ in pts)
    if slope >= 0:
        raise DataError("the BER does not fall with the voltage; no probit law fits")
    sigma = -1.0 / slope
    return mv + mz * sigma, sigma  # z = (mu - V) / sigma  =>  mu = V + z sigma at the means


def _kc705b_table() -> tuple[tuple[float, ...], tuple[float, ...]]:
    vs = sorted(_KC705B_FAULTS)
    return (*vs, _KC705B_VMIN, 1.0), (*(_KC705B_FAULTS[v] / _KC705B_BITS for v in vs), 0.0, 0.0)


def _builtin(name: str) -> BerCurve:
    node = "28 nm (TSMC HPL; Xilinx Kintex-7 XC7K325T block RAM, KC705 board B)"
    vs, bs = _kc705b_table()
    if name == "kc705b-28nm":
        return BerCurve(name, "table", 1.0, min(vs), node, _KC705B_SOURCE, "stuck0", vs, bs)
    if name == "kc705b-28nm-probit":
        measured = [(v, b) for v, b in zip(vs, bs, strict=True) if b > 0]
        mu, sigma = probit_fit([v for v, _ in measured], [b for _, b in measured])
        return BerCurve(name, "probit", 1.0, 0.40, node, _KC705B_SOURCE + "; Gaussian cell-Vmin (probit) fit, "
                        "extrapolated below 0.53 V", "stuck0", mu=mu, sigma=sigma)
    raise ConfigError(f"unknown BER curve {name!r}; built-in curves: {', '.join(BUILTIN_CURVES)}, or the path of "
                      "a CSV table of 'voltage, ber' rows")


BUILTIN_CURVES = ("kc705b-28nm", "kc705b-28nm-probit")


def builtin_curve(name: str) -> BerCurve:
    """A built-in curve by name (see the module docstring)."""
    return _builtin(name)


def load_curve(path: str | Path, *, nominal_v: float | None = None, node: str = "user table",
               fault_mode: FaultMode = "stuck") -> BerCurve:
    """A table curve from a CSV / text file of ``voltage, ber`` rows (module docstring); the nominal voltage
    defaults to the last row's."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"BER table {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read BER table {str(p)!r}: {exc}") from exc
    rows: list[tuple[float, float]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].replace(",", " ").replace(";", " ").strip()
        if not line:
            continue
        parts = line.split()
        try:
            vals = [float(t) for t in parts]
        except ValueError:
            if not rows and all(not any(c.isdigit() for c in t) for t in parts):
                continue  # a header line such as "voltage, ber"
            raise DataError(f"{str(p)!r} line {lineno}: not a number ({raw.strip()[:60]!r})") from None
        if len(vals) != 2:
            raise DataError(f"{str(p)!r} line {lineno}: expected 'voltage, ber', got {len(vals)} values")
        rows.append((vals[0], vals[1]))
    vs = tuple(v for v, _ in rows)
    bs = tuple(b for _, b in rows)
    _check_table(vs, bs, f"BER table {str(p)!r}")
    nom = vs[-1] if nominal_v is None else check_voltage(nominal_v, "nominal voltage")
    if nom < vs[0]:
        raise ConfigError(f"nominal voltage {nom:g} V is below the table's first row ({vs[0]:g} V)")
    if nom > vs[-1] and bs[-1] > 0:
        raise ConfigError(f"nominal voltage {nom:g} V is above the table's last row ({vs[-1]:g} V, BER {bs[-1]:g}); "
                          "add a row with BER 0 to say where the memory becomes fault-free")
    return BerCurve(p.stem, "table", nom, vs[0], node, f"user table {p.name}", fault_mode, vs, bs)


def resolve_curve(spec: str, *, nominal_v: float | None = None, fault_mode: FaultMode | None = None) -> BerCurve:
    """A built-in curve by name, or a user table by path; ``nominal_v`` / ``fault_mode`` override the curve's."""
    import dataclasses

    if spec in BUILTIN_CURVES:
        curve = builtin_curve(spec)
        if nominal_v is not None:
            curve = dataclasses.replace(curve, nominal_v=check_voltage(nominal_v, "nominal voltage"))
    elif Path(spec).suffix or "/" in spec or Path(spec).exists():
        curve = load_curve(spec, nominal_v=nominal_v)
    else:
        return builtin_curve(spec)  # raises with the list of names
    return dataclasses.replace(curve, fault_mode=fault_mode) if fault_mode is not None else curve

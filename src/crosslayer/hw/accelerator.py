"""Accelerator description: PE array, memory hierarchy, per-access energies, clock (read from TOML).

Per-access energies default to the Eyeriss normalisation (Chen et al., "Eyeriss: A Spatial Architecture
for Energy-Efficient Dataflow for Convolutional Neural Networks", ISCA 2016, Fig. 7): one 16-bit MAC = 1,
register file = 1, inter-PE network = 2, global buffer = 6, DRAM = 200, each per 16-bit word access.
An access of a ``b``-bit value costs ``b / word_bits`` of a word access (values are packed).

MAC energy scales with the product of the operand widths relative to ``reference_bits`` (a multiplier's
energy grows about quadratically with its width: Horowitz, "Computing's Energy Problem", ISSCC 2014,
8-bit vs 32-bit integer multiply 0.2 pJ vs 3.1 pJ, ratio 15.5 ~ 4^2) and with the relative power of an
approximate multiplier when one is assigned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib

from crosslayer.hw.errors import HardwareConfigError

__all__ = ["DATAFLOWS", "Accelerator", "EnergyTable", "accelerator_from_mapping", "load_accelerator",
           "mac_energy", "preset_names"]

DATAFLOWS = ("WS", "OS", "RS", "IS")
ENERGY_KEYS = ("dram", "glb", "noc", "rf", "mac")
Dataflow = Literal["WS", "OS", "RS", "IS"]


# Upper bounds: far beyond any real accelerator, small enough that every cost stays a finite float.
INT_LIMITS = {"rows": 1 << 12, "cols": 1 << 12, "rf_bytes": 1 << 24, "glb_bytes": 1 << 40, "dram_bytes": 1 << 50,
              "word_bits": 64, "psum_bits": 64, "reference_bits": 64}
FLOAT_LIMITS = {"clock_mhz": 1e6, "glb_bandwidth": 1e9, "dram_bandwidth": 1e9, "energy": 1e12,
                "relative_power": 1e3, "bits": 64}
_SECTION = {"rows": "accelerator", "cols": "accelerator", "clock_mhz": "accelerator", "word_bits": "accelerator",
            "psum_bits": "accelerator", "rf_bytes": "memory", "glb_bytes": "memory", "dram_bytes": "memory",
            "glb_bandwidth": "memory", "dram_bandwidth": "memory", "reference_bits": "mac"}
MAX_TOML_BYTES = 1 << 20


def _positive(name: str, value: float, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise HardwareConfigError(f"{name} = {value!r} must be a positive number")
    if hi is not None and value > hi:
        raise HardwareConfigError(f"{name} = {value!r} is out of range; allowed (0, {hi:g}]")


@dataclass(frozen=True, kw_only=True)
class EnergyTable:
    """Energy per word access of each level and per reference MAC (normalised units, MAC = 1)."""

    dram: float = 200.0
    glb: float = 6.0
    noc: float = 2.0
    rf: float = 1.0
    mac: float = 1.0

    def validate(self) -> None:
        for k in ENERGY_KEYS:
            _positive(f"energy.{k}", getattr(self, k), FLOAT_LIMITS["energy"])

    def of(self, level: str) -> float:
        if level not in ENERGY_KEYS:
            raise HardwareConfigError(f"energy level {level!r} is unknown; allowed: {', '.join(ENERGY_KEYS)}")
        return float(getattr(self, level))


@dataclass(frozen=True, kw_only=True)
class Accelerator:
    """A PE array with per-PE register files, one global buffer (GLB) and DRAM.

    ``kind="systolic"`` arrays move operands neighbour-to-neighbour, so each fold pays the pipeline
    fill and drain (SCALE-Sim's timing); ``kind="spatial"`` arrays (Eyeriss) multicast over a NoC.
    Bandwidths are in words of ``word_bits`` per cycle.
    """

    name: str
    kind: Literal["spatial", "systolic"]
    rows: int
    cols: int
    clock_mhz: float
    rf_bytes: int
    glb_bytes: int
    dram_bytes: int
    glb_bandwidth: float
    dram_bandwidth: float
    energy: EnergyTable
    word_bits: int = 16
    psum_bits: int = 16
    reference_bits: int = 16
    dataflows: tuple[str, ...] = ("WS", "OS")

    def validate(self) -> None:
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 200 or not self.name.isprintable():
            raise HardwareConfigError(f"accelerator.name = {self.name!r} must be printable text of 1 to 200 characters")
        if self.kind not in ("spatial", "systolic"):
            raise HardwareConfigError(f"accelerator.kind = {self.kind!r} is unknown; allowed: 'spatial', 'systolic'")
        for f, hi in INT_LIMITS.items():
            v = getattr(self, f)
            key = f"{_SECTION[f]}.{f}"
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise HardwareConfigError(f"{key} = {v!r} must be a positive integer")
            if v > hi:
                raise HardwareConfigError(f"{key} = {v!r} is out of range; allowed [1, {hi}]")
        for f in ("clock_mhz", "glb_bandwidth", "dram_bandwidth"):
            _positive(f"{_SECTION[f]}.{f}", getattr(self, f), FLOAT_LIMITS[f])
        self.energy.validate()
        if not isinstance(self.dataflows, tuple) or not all(isinstance(d, str) for d in self.dataflows):
            raise HardwareConfigError(f"accelerator.dataflows = {self.dataflows!r} must be a list of names; "
                                      f"allowed: {', '.join(DATAFLOWS)}")
        if not self.dataflows:
            raise HardwareConfigError(f"accelerator.dataflows is empty; allowed: {', '.join(DATAFLOWS)}")
        if len(set(self.dataflows)) != len(self.dataflows):
            raise HardwareConfigError(f"accelerator.dataflows = {list(self.dataflows)} names a dataflow twice")
        for df in self.dataflows:
            check_dataflow(df)
        if "RS" in self.dataflows and self.kind == "systolic":
            raise HardwareConfigError("accelerator.dataflows: 'RS' needs kind = 'spatial' (a multicast NoC)")
        if "IS" in self.dataflows and self.kind != "systolic":
            raise HardwareConfigError("accelerator.dataflows: 'IS' is modelled for kind = 'systolic' only")

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def rf_words(self) -> int:
        return self.rf_bytes * 8 // self.word_bits

    def __post_init__(self) -> None:
        self.validate()


def check_dataflow(df: str) -> str:
    if df not in DATAFLOWS:
        raise HardwareConfigError(f"dataflow {df!r} is unknown; allowed: {', '.join(DATAFLOWS)}")
    return df


def mac_energy(acc: Accelerator, weight_bits: int, act_bits: int, relative_power: float = 1.0) -> float:
    """Energy of one MAC: ``energy.mac * (wb * ab) / ref^2 * relative_power`` (Horowitz 2014 scaling)."""
    _positive("weight_bits", weight_bits, FLOAT_LIMITS["bits"])
    _positive("act_bits", act_bits, FLOAT_LIMITS["bits"])
    _positive("relative_power", relative_power, FLOAT_LIMITS["relative_power"])
    return acc.energy.mac * (weight_bits * act_bits) / acc.reference_bits ** 2 * relative_power


def _section(doc: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    sec = doc.get(name, {})
    if not isinstance(sec, Mapping):
        raise HardwareConfigError(f"{where}: section {name} must be a table, not {type(sec).__name__}")
    return dict(sec)


def accelerator_from_mapping(doc: Mapping[str, Any], where: str = "accelerator") -> Accelerator:
    """Build an :class:`Accelerator` from the TOML document layout (``[accelerator]``, ``[memory]``,
    ``[energy]``, ``[mac]``); every energy entry must be present."""
    unknown_sections = sorted(set(doc) - {"accelerator", "memory", "energy", "mac"})
    if unknown_sections:
        raise HardwareConfigError(f"{where}: unknown section(s) {', '.join(unknown_sections)}; "
                                  "allowed: accelerator, memory, energy, mac")
    acc = _section(doc, "accelerator", where)
    mem = _section(doc, "memory", where)
    en = _section(doc, "energy", where)
    mac = _section(doc, "mac", where)
    missing = [k for k in ENERGY_KEYS if k not in en]
    if missing:
        raise HardwareConfigError(f"{where}: energy entry {', '.join(f'energy.{k}' for k in missing)} is missing; "
                                  f"the energy section needs {', '.join(ENERGY_KEYS)}")
    unknown = sorted(set(en) - set(ENERGY_KEYS))
    if unknown:
        raise HardwareConfigError(f"{where}: unknown energy entry {', '.join(unknown)}; "
                                  f"allowed: {', '.join(ENERGY_KEYS)}")
    required = {"accelerator": ("name", "kind", "rows", "cols", "clock_mhz"),
                "memory": ("rf_bytes", "glb_bytes", "dram_bytes", "glb_bandwidth", "dram_bandwidth")}
    for sec_name, keys in required.items():
        sec = acc if sec_name == "accelerator" else mem
        for k in keys:
            if k not in sec:
                raise HardwareConfigError(f"{where}: {sec_name}.{k} is missing")
    allowed = {"accelerator": {"name", "kind", "rows", "cols", "clock_mhz", "word_bits", "psum_bits", "dataflows"},
               "memory": set(required["memory"]), "mac": {"reference_bits"}}
    for sec_name, sec in (("accelerator", acc), ("memory", mem), ("mac", mac)):
        extra = sorted(set(sec) - allowed[sec_name])
        if extra:
            raise HardwareConfigError(f"{where}: unknown key(s) {', '.join(f'{sec_name}.{k}' for k in extra)}; "
                                      f"allowed: {', '.join(sorted(allowed[sec_name]))}")
    dataflows = acc.get("dataflows", ["WS", "OS"])
    if not isinstance(dataflows, (list, tuple)):
        raise HardwareConfigError(f"{where}: accelerator.dataflows = {dataflows!r} must be a list such as "
                                  f"[\"WS\", \"OS\"]; allowed names: {', '.join(DATAFLOWS)}")
    try:
        return Accelerator(
            name=acc["name"], kind=acc["kind"], rows=acc["rows"], cols=acc["cols"],
            clock_mhz=acc["clock_mhz"], word_bits=acc.get("word_bits", 16), psum_bits=acc.get("psum_bits", 16),
            dataflows=tuple(dataflows),
            rf_bytes=mem["rf_bytes"], glb_bytes=mem["glb_bytes"], dram_bytes=mem["dram_bytes"],
            glb_bandwidth=mem["glb_bandwidth"], dram_bandwidth=mem["dram_bandwidth"],
            energy=EnergyTable(**{k: en[k] for k in ENERGY_KEYS}),
            reference_bits=mac.get("reference_bits", 16))
    except HardwareConfigError as exc:
        raise HardwareConfigError(f"{where}: {exc}") from None
    except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
        raise HardwareConfigError(f"{where}: {exc}") from exc


def read_accelerator_toml(path: Path, where: str) -> dict[str, Any]:
    """Parse an accelerator TOML file as untrusted data: bounded size, UTF-8 text, valid TOML."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TOML_BYTES + 1)
    except OSError as exc:
        raise HardwareConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_TOML_BYTES:
        raise HardwareConfigError(f"{where}: larger than {MAX_TOML_BYTES} bytes; an accelerator description is "
                                  "a short TOML file")
    if b"\x00" in raw:
        raise HardwareConfigError(f"{where}: is a binary file (it holds NUL bytes), not an accelerator TOML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HardwareConfigError(f"{where}: is not UTF-8 text (byte {exc.start}); save the TOML file as "
                                  "UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HardwareConfigError(f"{where}: is not valid TOML: {exc}") from None
    except RecursionError:
        raise HardwareConfigError(f"{where}: is nested too deeply to be an accelerator description") from None


def preset_names() -> list[str]:
    files = resources.files("crosslayer.hw").joinpath("presets")
    return sorted(p.name.removesuffix(".toml") for p in files.iterdir() if p.name.endswith(".toml"))


def load_accelerator(name_or_path: str | Path) -> Accelerator:
    """A preset by name (``eyeriss``, ``tpu``) or an accelerator TOML file."""
    s = str(name_or_path)
    if s in preset_names():
        with resources.as_file(resources.files("crosslayer.hw").joinpath("presets").joinpath(f"{s}.toml")) as p:
            return accelerator_from_mapping(read_accelerator_toml(p, f"preset {s!r}"), where=f"preset {s!r}")
    p = Path(s)
    if not p.is_file():
        raise HardwareConfigError(f"accelerator {s!r} is neither a preset ({', '.join(preset_names())}) "
                                  "nor an existing TOML file")
    return accelerator_from_mapping(read_accelerator_toml(p, str(p)), where=str(p))

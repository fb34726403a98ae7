"""The named multiplier library: built-in designs, parametric families, and their relative power.

Names: ``exact``; ``trunc<v>`` (BAM with vertical break level v, i.e. the v low product columns
dropped); ``bam_h<h>_v<v>``; ``ppp<start>_<count>`` (partial-product perforation); ``drum<k>``;
``mitchell``; ``etm<low>``; ``kulkarni``. :data:`DEFAULT_NAMES` lists the built-in selection.

Relative power (exact 8x8 array multiplier = 1.0) is an *estimate*, overridable everywhere:

- bit-elimination designs (truncation, BAM, perforation): the share of the 64 partial-product cells
  (AND gate + adder cell) that remain, the cell-count argument Mahdiani et al. (TCAS-I 2010) and
  Zervakis et al. (TVLSI 2016) use for their area / power savings;
- DRUM-k: a k x k array (k^2 cells) plus 24 cells for the two leading-one detectors and the output
  shifter (our estimate: 3 cells per operand bit), over 64;
- Mitchell: two leading-one detectors, two shifters and an adder, 5 cells per operand bit (40 / 64);
- ETM-l: an (8-l) x (8-l) array plus an OR chain and a multiplexer, ((8-l)^2 + 2 l + 8) / 64;
- Kulkarni: 0.62, the mid-point of the 31.8-45.4 % power savings reported in Kulkarni et al.'s
  abstract (VLSI Design 2011).

These are gate-count proxies, not synthesis results; load a truth table with a measured figure (e.g.
from EvoApproxLib's published power column) when one is available.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import numpy as np

from crosslayer.approx import multipliers as mm
from crosslayer.approx.tables import Multiplier, operand_values
from crosslayer.errors import ConfigError

__all__ = ["DEFAULT_NAMES", "FAMILIES", "get_multiplier", "library", "resolve"]

DEFAULT_NAMES: tuple[str, ...] = ("exact", "trunc4", "trunc6", "trunc8", "bam_h2_v6", "ppp0_2", "ppp0_3",
                                  "drum4", "drum5", "mitchell", "etm3", "etm4", "kulkarni")

FAMILIES = ("exact", "trunc<v> (v 1-14)", "bam_h<h>_v<v> (h 0-7, v 0-14)", "ppp<start>_<count>", "drum<k> (k 2-7)",
            "mitchell", "etm<low> (low 1-7)", "kulkarni")

_CELLS = 64.0
Core = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _bam_cells(hbl: int, vbl: int) -> int:
    return sum(1 for j in range(hbl, 8) for i in range(8) if i + j >= vbl)


def _spec(name: str) -> tuple[Core, float, str, str]:
    """(unsigned core, relative power, description, power source) for a library name."""
    if name == "exact":
        return mm.exact, 1.0, "exact 8x8 array multiplier", "reference"
    if m := re.fullmatch(r"trunc(\d+)", name):
        v = int(m.group(1))
        if 1 <= v <= 14:
            return (functools.partial(mm.bam, hbl=0, vbl=v), _bam_cells(0, v) / _CELLS,
                    f"truncated array multiplier, {v} low product columns dropped (Mahdiani et al. 2010)",
                    "cell count (Mahdiani et al. 2010)")
    if m := re.fullmatch(r"bam_h(\d+)_v(\d+)", name):
        h, v = int(m.group(1)), int(m.group(2))
        if 0 <= h <= 7 and 0 <= v <= 14:
            return (functools.partial(mm.bam, hbl=h, vbl=v), _bam_cells(h, v) / _CELLS,
                    f"broken-array multiplier HBL={h} VBL={v} (Mahdiani et al. 2010)",
                    "cell count (Mahdiani et al. 2010)")
    if m := re.fullmatch(r"ppp(\d+)_(\d+)", name):
        s, c = int(m.group(1)), int(m.group(2))
        if 1 <= c <= 7 and s + c <= 8:
            return (functools.partial(mm.perforated, start=s, count=c), (8 - c) * 8 / _CELLS,
                    f"partial-product perforation of rows {s}..{s + c - 1} (Zervakis et al. 2016)",
                    "cell count (Zervakis et al. 2016)")
    if m := re.fullmatch(r"drum(\d+)", name):
        k = int(m.group(1))
        if 2 <= k <= 7:
            return (functools.partial(mm.drum, k=k), (k * k + 24) / _CELLS,
                    f"DRUM-{k} dynamic range unbiased multiplier (Hashemi et al. 2015)",
                    "estimate: k^2 array + 24 cells (LODs, shifter)")
    if name == "mitchell":
        return mm.mitchell, 40 / _CELLS, "Mitchell's logarithmic multiplier (Mitchell 1962)", \
            "estimate: 2 LODs + 2 shifters + adder = 40 cells"
    if m := re.fullmatch(r"etm(\d+)", name):
        lo = int(m.group(1))
        if 1 <= lo <= 7:
            return (functools.partial(mm.etm, low=lo), ((8 - lo) ** 2 + 2 * lo + 8) / _CELLS,
                    f"error-tolerant multiplier, {lo} LSBs approximated (Kyaw et al. 2010)",
                    "estimate: (8-l)^2 array + OR chain + mux")
    if name == "kulkarni":
        return mm.kulkarni, 0.62, "under-designed multiplier from approximate 2x2 blocks (Kulkarni et al. 2011)", \
            "mid-point of the 31.8-45.4 % saving reported by Kulkarni et al. 2011"
    raise ConfigError(f"unknown multiplier {name!r}; built-in names: {', '.join(DEFAULT_NAMES)}; "
                      f"families: {', '.join(FAMILIES)}")


@functools.lru_cache(maxsize=128)
def _builtin(name: str) -> Multiplier:
    core, power, desc, source = _spec(name)
    v = operand_values(False)
    table = core(v[:, None], v[None, :]).astype(np.int64)
    table.setflags(write=False)
    return Multiplier(name=name, table=table, signed=False, relative_power=power, description=desc, source=source)


def get_multiplier(name: str, relative_power: float | None = None) -> Multiplier:
    """The built-in multiplier ``name`` (see module docstring), optionally with another power figure."""
    base = _builtin(name.strip().lower())
    if relative_power is None:
        return base
    return Multiplier(name=base.name, table=base.table, signed=False, relative_power=float(relative_power),
                      description=base.description, source="configured")


def library(names: tuple[str, ...] | list[str] = DEFAULT_NAMES,
            power_overrides: dict[str, float] | None = None) -> list[Multiplier]:
    """Several built-in multipliers, with optional per-name power overrides."""
    over = power_overrides or {}
    unknown = sorted(set(over) - set(names))
    if unknown:
        raise ConfigError(f"power override for {', '.join(map(repr, unknown))}, which is not among the "
                          f"multipliers {', '.join(names)}")
    return [get_multiplier(n, over.get(n)) for n in names]


def resolve(item: str | Multiplier) -> Multiplier:
    """A multiplier given by name or already built."""
    return item if isinstance(item, Multiplier) else get_multiplier(item)

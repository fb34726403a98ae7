"""Fault maps of one manufactured chip's weight memory, drawn from a BER-vs-voltage curve.

A voltage-scaled SRAM cell fails when the supply drops below its own minimum operating voltage, which
process variation fixes per cell and per chip; a failing cell reads a fixed value. MATIC (Kim et al.,
"MATIC: Learning Around Errors for Efficient Low-Voltage Neural Network Accelerators", DATE 2018) builds on
exactly this: the bit errors of a given chip at a given voltage are persistent, so they can be profiled and
trained around. The published KC705-B dumps behind :mod:`crosslayer.memory.curves` show the same: the bits
failing at one voltage keep failing at every lower one.

Model. The weight memory holds the words of every targeted tensor one after the other (layer order,
row-major), ``width`` bits per word. Each bit cell ``c`` gets a failure threshold ``t_c``: it fails at
voltage ``V`` iff ``t_c < m_b BER(V)``, where ``m_b`` is its bank's vulnerability (1 for every bank unless
``bank_sigma > 0``: then banks of ``bank_words`` words draw ``m_b`` log-normally with mean 1, the per-BRAM
non-uniformity the dumps show). Drawing ``t_c`` uniform makes the failing share of each bank ``m_b BER(V)``
and the fault sets nested over voltages. Only cells that fail at the lowest voltage of interest are
stored (their count is binomial, their positions uniform without replacement), so a map costs memory in
proportion to its faults. How a failing cell reads (``mode``):

- ``stuck``: at a level drawn once per cell (1 with probability ``p_one``): MATIC's read-upset cells that
  settle to their preferred state;
- ``stuck0`` / ``stuck1``: fail-to-0 / fail-to-1 (the KC705-B dumps show 1 -> 0 failures);
- ``flip``: the bit reads inverted.

Everything here is a pure function of integer words (:mod:`crosslayer.resilience.faults` does the bit
operations); :mod:`crosslayer.memory.weights` applies a map to a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from crosslayer.errors import ConfigError
from crosslayer.memory.curves import FAULT_MODES, BerCurve, FaultMode
from crosslayer.resilience.faults import WordFormat, apply_word_mask, sample_distinct

__all__ = ["ChipMap", "LayerFaults", "apply_faults", "fault_masks", "sample_chip"]


@dataclass(frozen=True)
class LayerFaults:
    """The candidate failing cells of one tensor: flat word ``index``, ``bit``, threshold ``t`` (the cell
    fails when the bank-scaled BER exceeds it) and stuck ``level`` (0 / 1)."""

    index: torch.Tensor
    bit: torch.Tensor
    t: torch.Tensor
    level: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.numel())


@dataclass(frozen=True)
class ChipMap:
    """One chip: per tensor its :class:`LayerFaults`, valid for voltages down to ``v_low``, under ``curve``."""

    curve: BerCurve
    mode: FaultMode
    width: int
    v_low: float
    seed: int
    layers: dict[str, LayerFaults]
    numel: dict[str, int]

    def ber(self, voltage: float) -> float:
        v = float(voltage)
        if v < self.v_low - 1e-12:
            raise ConfigError(f"voltage = {v:g} V is below {self.v_low:g} V, the lowest voltage this chip's map was "
                              "drawn for; draw the chip with a lower v_low")
        return self.curve.ber(v)

    def failing(self, name: str, voltage: float | Mapping[str, float]) -> torch.Tensor:
        """Boolean mask over ``layers[name]``'s candidates: the cells failing at the voltage (one for all
        tensors, or a per-tensor mapping)."""
        if name not in self.layers:
            raise ConfigError(f"the chip has no tensor {name!r}; it holds {', '.join(self.layers)}")
        v = voltage[name] if isinstance(voltage, Mapping) else voltage
        lf = self.layers[name]
        return lf.t < self.ber(v)

    def fault_count(self, voltage: float | Mapping[str, float]) -> int:
        """Failing bits over the whole memory at the voltage."""
        return sum(int(self.failing(n, voltage).sum()) for n in self.layers)

    @property
    def bits(self) -> int:
        return self.width * sum(self.numel.values())


def _bank_multipliers(words: int, bank_words: int, bank_sigma: float, gen: torch.Generator) -> torch.Tensor:
    banks = max(1, math.ceil(words / bank_words)) if bank_words > 0 else 1
    if bank_sigma <= 0:
        return torch.ones(banks, dtype=torch.float64)
    z = torch.randn(banks, generator=gen, dtype=torch.float64)
    return torch.exp(bank_sigma * z - bank_sigma**2 / 2)  # log-normal, mean 1


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def sample_chip(tensors: Sequence[tuple[str, int]], width: int, curve: BerCurve, *, v_low: float, seed: int,
                mode: FaultMode | None = None, p_one: float = 0.5, bank_words: int = 0,
                bank_sigma: float = 0.0) -> ChipMap:
    """Draw one chip's fault map for ``tensors`` (``(name, words)`` in memory order) of ``width``-bit words,
    valid down to ``v_low`` (see the module docstring). Same seed, same chip."""
    mode = mode or curve.fault_mode
    if mode not in FAULT_MODES:
        raise ConfigError(f"fault mode = {mode!r}; allowed {', '.join(FAULT_MODES)}")
    if not 0.0 <= p_one <= 1.0 or math.isnan(p_one):
        raise ConfigError(f"p_one = {p_one!r}; allowed [0, 1]")
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 32:
        raise ConfigError(f"word width = {width!r}; allowed 1..32 bits")
    if bank_words < 0 or bank_sigma < 0 or math.isnan(bank_sigma):
        raise ConfigError("bank_words and bank_sigma must be >= 0")
    if not tensors:
        raise ConfigError("no weight tensors to draw a fault map for")
    ber_low = curve.ber(v_low)
    gen = torch.Generator().manual_seed(seed)
    total_words = sum(n for _, n in tensors)
    mult = _bank_multipliers(total_words, bank_words, bank_sigma, gen)
    per_bank = bank_words if bank_words > 0 else total_words
    layers: dict[str, LayerFaults] = {}
    start = 0
    for name, words in tensors:
        idx_parts, bit_parts, t_parts = [], [], []
        w0 = start
        while w0 < start + words:  # one stretch per bank the tensor overlaps
            bank = w0 // per_bank if per_bank else 0
            w1 = min(start + words, (bank + 1) * per_bank)
            rate = min(1.0, float(mult[bank]) * ber_low)
            cells = (w1 - w0) * width
            count = int(torch.binomial(torch.tensor(float(cells)), torch.tensor(rate), generator=gen)) if rate else 0
            if count:
                flat = sample_distinct(cells, count, gen)
                idx_parts.append(flat // width + (w0 - start))
                bit_parts.append(flat % width)
                # t uniform on [0, rate): a cell fails at V iff t < m_b BER(V); stored divided by m_b
                t_parts.append(torch.rand(count, generator=gen, dtype=torch.float64) * rate / float(mult[bank]))
            w0 = w1
        t = _cat(t_parts, torch.float64)
        level = (torch.rand(t.shape, generator=gen) < p_one).to(torch.int64)
        if mode == "stuck0":
            level.zero_()
        elif mode == "stuck1":
            level.fill_(1)
        layers[name] = LayerFaults(_cat(idx_parts, torch.int64), _cat(bit_parts, torch.int64), t, level)
        start += words
    return ChipMap(curve, mode, width, float(v_low), seed, layers, dict(tensors))


def fault_masks(chip: ChipMap, name: str, voltage: float | Mapping[str, float]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                          torch.Tensor]:
    """``(words, failing-bit masks, stuck-at-1 masks)`` of tensor ``name`` at the voltage: the distinct
    flat word indices with at least one failing bit and, per word, the failing bits and those reading 1."""
    lf = chip.layers[name]
    sel = chip.failing(name, voltage)
    idx, bit, level = lf.index[sel], lf.bit[sel], lf.level[sel]
    words, inv = torch.unique(idx, return_inverse=True)
    ones = torch.ones_like(bit) << bit
    mask = torch.zeros(words.numel(), dtype=torch.int64).index_add_(0, inv, ones)  # distinct bits: sum == or
    high = torch.zeros(words.numel(), dtype=torch.int64).index_add_(0, inv, ones * level)
    return words, mask, high


def apply_faults(codes: torch.Tensor, fmt: WordFormat, chip: ChipMap, name: str,
                 voltage: float | Mapping[str, float]) -> torch.Tensor:
    """A copy of the integer ``codes`` of tensor ``name`` as the chip reads them back at the voltage."""
    if codes.numel() != chip.numel.get(name, -1):
        raise ConfigError(f"tensor {name!r} has {codes.numel()} words but the chip was drawn for "
                          f"{chip.numel.get(name, 0)}")
    if fmt.width != chip.width:
        raise ConfigError(f"tensor {name!r} is stored in {fmt.width}-bit words but the chip was drawn for "
                          f"{chip.width}-bit words")
    words, mask, high = (t.to(codes.device) for t in fault_masks(chip, name, voltage))
    out = codes.reshape(-1).clone()
    if words.numel() == 0:
        return out.reshape(codes.shape)
    stored = out[words]
    if chip.mode == "flip":
        new = apply_word_mask(stored, fmt, mask, "flip")
    else:
        new = apply_word_mask(apply_word_mask(stored, fmt, mask, "stuck0"), fmt, high, "stuck1")
    out[words] = new.to(out.dtype)
    return out.reshape(codes.shape)

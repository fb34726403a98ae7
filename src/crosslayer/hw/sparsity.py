"""Zero-skipping and compressed storage: what sparsity really buys on an accelerator.

* Compressed storage with relative indices (EIE: Han et al., "EIE: Efficient Inference Engine on
  Compressed Deep Neural Network", ISCA 2016): every non-zero carries a ``index_bits`` run-length index;
  a run of zeros longer than ``2**index_bits - 1`` needs a padding zero; each column (output channel for
  weights, channel for activations) adds a ``pointer_bits`` start pointer. The format is used only where
  it is smaller than dense storage.
* Zero-skipping of weights and/or activations (EIE skips zero activations and stores only non-zero
  weights; SCNN, Parashar et al., ISCA 2017, skips both): skipped MACs cost neither energy nor cycles, but
  lanes that share a fold wait for the busiest one (load imbalance). With measured per-filter non-zero
  counts the imbalance is exact for that grouping; otherwise the expected maximum of binomial lane loads
  is taken from the normal approximation ``mean + std * sqrt(2 ln lanes)`` (an upper-bound style estimate
  of the largest of ``lanes`` samples, capped at the dense length).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from crosslayer.config import check_range
from crosslayer.hw.errors import HardwareConfigError

__all__ = ["SkipMode", "SparsityConfig", "activation_imbalance", "activation_imbalance_array", "compressed_bits",
           "skip_fraction", "stored_bits", "weight_imbalance"]

SkipMode = Literal["none", "weights", "activations", "both"]
_MODES = ("none", "weights", "activations", "both")


@dataclass(frozen=True, kw_only=True)
class SparsityConfig:
    """How the accelerator exploits zeros: ``skip`` which operand's zeros are skipped (and stored
    compressed), with ``index_bits`` relative indices and ``pointer_bits`` column pointers (EIE: 4, 16)."""

    skip: SkipMode = "none"
    index_bits: int = 4
    pointer_bits: int = 16

    def validate(self) -> None:
        if self.skip not in _MODES:
            raise HardwareConfigError(f"sparsity.skip = {self.skip!r} is unknown; allowed: {', '.join(_MODES)}")
        check_range("sparsity.index_bits", self.index_bits, 1, 16)
        check_range("sparsity.pointer_bits", self.pointer_bits, 1, 64)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def skips_weights(self) -> bool:
        return self.skip in ("weights", "both")

    @property
    def skips_activations(self) -> bool:
        return self.skip in ("activations", "both")


def compressed_bits(count: int, density: float, value_bits: int, index_bits: int, pointer_bits: int,
                    columns: int) -> tuple[float, bool]:
    """Storage bits of ``count`` values at ``density`` non-zeros: ``(bits, compressed?)``.

    Relative-index format: zeros between non-zeros are i.i.d. with probability ``q = 1 - density``, so a
    zero run ``z`` is geometric and needs ``floor(z / L)`` padding entries, ``L = 2**index_bits``; its mean
    is ``sum_k q**(k L) = q**L / (1 - q**L)`` per non-zero. Returns dense storage when that is smaller.
    """
    if count < 0 or columns < 0:
        raise HardwareConfigError(f"count = {count} and columns = {columns} must be non-negative")
    check_range("density", density, 0.0, 1.0)
    bits = stored_bits(count, density, value_bits, index_bits, pointer_bits, columns)
    return bits, bits < float(count * value_bits)


def stored_bits(count: int, density: float, value_bits: int, index_bits: int, pointer_bits: int,
                columns: int) -> float:
    """The bits of :func:`compressed_bits` without its argument checks (the cost model's inner loop, on
    validated layer shapes)."""
    dense = float(count * value_bits)
    if count == 0:
        return 0.0
    q = 1.0 - density
    run = 2 ** index_bits
    qL = q ** run
    pad_per_nz = qL / (1.0 - qL) if qL < 1.0 else 0.0
    entries = count * density * (1.0 + pad_per_nz)
    sparse = entries * (value_bits + index_bits) + columns * pointer_bits
    return sparse if sparse < dense else dense


def skip_fraction(cfg: SparsityConfig, weight_density: float, act_density: float) -> float:
    """Fraction of MACs that remain when zeros are skipped (zeros of the two operands independent)."""
    f = 1.0
    if cfg.skips_weights:
        f *= weight_density
    if cfg.skips_activations:
        f *= act_density
    return f


def weight_imbalance(filter_nnz: Sequence[int], lanes: int) -> float:
    """Load-imbalance factor (>= 1) when consecutive filters run on ``lanes`` parallel lanes and each
    fold lasts as long as its busiest lane: ``sum(max per fold) / sum(mean per fold)``."""
    if lanes <= 0:
        raise HardwareConfigError(f"lanes = {lanes} must be positive")
    nnz = list(filter_nnz)
    if not nnz or sum(nnz) == 0:
        return 1.0
    worst = 0.0
    mean = 0.0
    for i in range(0, len(nnz), lanes):
        chunk = nnz[i:i + lanes]
        worst += max(chunk)
        mean += sum(chunk) / len(chunk)
    return worst / mean if mean > 0 else 1.0


def activation_imbalance(length: int, density: float, lanes: int) -> float:
    """Expected load-imbalance factor (>= 1) of ``lanes`` lanes each skipping zeros among ``length``
    activations of ``density`` (binomial loads, normal approximation of the maximum)."""
    if length <= 0 or lanes <= 0:
        raise HardwareConfigError(f"length = {length} and lanes = {lanes} must be positive")
    check_range("density", density, 0.0, 1.0)
    mean = length * density
    if mean <= 0 or density >= 1.0 or lanes == 1:
        return 1.0
    std = math.sqrt(length * density * (1.0 - density))
    worst = min(float(length), mean + std * math.sqrt(2.0 * math.log(lanes)))
    return worst / mean


def activation_imbalance_array(length: np.ndarray, density: float, lanes: np.ndarray) -> np.ndarray:
    """:func:`activation_imbalance` element-wise over arrays of ``length`` and ``lanes`` (all positive)."""
    length = np.asarray(length)
    lanes = np.asarray(lanes)
    if (length <= 0).any() or (lanes <= 0).any():
        raise HardwareConfigError("every length and lane count must be positive")
    check_range("density", density, 0.0, 1.0)
    shape = np.broadcast_shapes(length.shape, lanes.shape)
    if density <= 0.0 or density >= 1.0:
        return np.ones(shape)
    mean = length * density
    std = np.sqrt(length * density * (1.0 - density))
    worst = np.minimum(length.astype(np.float64), mean + std * np.sqrt(2.0 * np.log(lanes)))
    return np.where(lanes == 1, 1.0, worst / mean)

"""Fault and noise models as pure tensor functions.

Every bit-level model works on *words*: the unsigned bit pattern of a value in its storage format,
either the IEEE-754 float32 pattern of a float tensor or the two's-complement pattern of a
``bits``-wide fixed-point code (``crosslayer.quant``). A fault is then a bit operation on words:

* single / multiple bit flips at chosen ``(element, bit)`` pairs or at random pairs,
* stuck-at-0 / stuck-at-1 of chosen bits,
* weight-memory bit errors at a bit-error rate: each stored bit fails independently with
  probability ``ber`` (the voltage-scaled SRAM of MATIC, Kim et al., DATE 2018), either as a read
  flip or as a cell stuck at a random value,

and additive Gaussian / uniform noise (relative to the tensor's standard deviation when asked), the
noise model used for error-resilience analysis by Hanif et al., DATE 2018.
Nothing here mutates its input; results are new tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec

__all__ = [
    "FLOAT32",
    "WordFormat",
    "apply_word_mask",
    "ber_masks",
    "check_ber",
    "check_bit",
    "code_format",
    "flip_bits",
    "from_words",
    "gaussian_noise",
    "random_fault_sites",
    "sample_distinct",
    "stuck_bits",
    "to_words",
    "uniform_noise",
]


@dataclass(frozen=True)
class WordFormat:
    """How values are stored: ``float32`` (32-bit IEEE pattern) or ``int`` codes of ``width`` bits.

    ``binary`` marks 1-bit {-1, +1} codes (XNOR-Net), stored as one bit ``code > 0``.
    """

    kind: Literal["float32", "int"]
    width: int
    signed: bool = True
    binary: bool = False

    def __str__(self) -> str:
        return "float32" if self.kind == "float32" else f"{'s' if self.signed else 'u'}int{self.width}"


FLOAT32 = WordFormat("float32", 32)


def code_format(spec: FixedPointSpec) -> WordFormat:
    """The word format of codes quantized with ``spec``."""
    return WordFormat("int", spec.bits, spec.signed, binary=spec.scheme == "binary")


def check_bit(bit: int, fmt: WordFormat, name: str = "bit") -> None:
    """A bit position must lie in ``[0, width - 1]`` of the word."""
    if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit < fmt.width:
        raise ConfigError(f"{name} = {bit!r} is beyond the {fmt.width}-bit word of {fmt}; "
                          f"allowed 0..{fmt.width - 1} (0 = least significant)")


def check_ber(ber: float, name: str = "ber") -> None:
    if not isinstance(ber, (int, float)) or isinstance(ber, bool) or not 0.0 <= float(ber) <= 1.0:
        raise ConfigError(f"{name} = {ber!r} is not a bit-error rate; allowed [0, 1]")


def to_words(x: torch.Tensor, fmt: WordFormat) -> torch.Tensor:
    """The unsigned bit patterns of ``x`` as int64 in ``[0, 2^width)``."""
    if fmt.kind == "float32":
        return x.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    codes = x.to(torch.int64)
    if fmt.binary:
        return (codes > 0).to(torch.int64)
    return codes & ((1 << fmt.width) - 1)


def from_words(words: torch.Tensor, fmt: WordFormat) -> torch.Tensor:
    """Inverse of :func:`to_words`: float32 values, or int32 codes (sign-extended when signed)."""
    if fmt.kind == "float32":
        signed = torch.where(words >= 1 << 31, words - (1 << 32), words)
        return signed.to(torch.int32).view(torch.float32)
    if fmt.binary:
        return (2 * words - 1).to(torch.int32)
    if fmt.signed:
        words = torch.where(words >= 1 << (fmt.width - 1), words - (1 << fmt.width), words)
    return words.to(torch.int32)


def _as_bits(bit: int | torch.Tensor, fmt: WordFormat, n: int) -> torch.Tensor:
    if isinstance(bit, torch.Tensor):
        b = bit.to(torch.int64).reshape(-1)
        if b.numel() and (int(b.min()) < 0 or int(b.max()) >= fmt.width):
            raise ConfigError(f"bit positions {b.min().item()}..{b.max().item()} are beyond the {fmt.width}-bit "
                              f"word of {fmt}; allowed 0..{fmt.width - 1}")
        return b.expand(n) if b.numel() == 1 else b
    check_bit(bit, fmt)
    return torch.full((n,), bit, dtype=torch.int64)


def _check_index(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    idx = index.to(torch.int64).reshape(-1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= x.numel()):
        raise ConfigError(f"element index out of range: the tensor has {x.numel()} elements")
    return idx


def flip_bits(x: torch.Tensor, fmt: WordFormat, index: torch.Tensor, bit: int | torch.Tensor) -> torch.Tensor:
    """Copy of ``x`` with bit ``bit`` of the flat elements ``index`` inverted (a repeated pair flips twice)."""
    idx = _check_index(x, index)
    bits = _as_bits(bit, fmt, idx.numel())
    words = to_words(x, fmt).reshape(-1)
    # a pair listed twice flips back: keep pairs of odd multiplicity, then add their distinct bit values
    pairs, counts = torch.unique(idx * 64 + bits, return_counts=True)
    pairs = pairs[counts % 2 == 1]
    mask = torch.zeros_like(words).index_put_((pairs // 64,), torch.ones_like(pairs) << (pairs % 64),
                                              accumulate=True)
    return from_words(words ^ mask, fmt).reshape(x.shape)


def stuck_bits(x: torch.Tensor, fmt: WordFormat, index: torch.Tensor, bit: int | torch.Tensor,
               value: int) -> torch.Tensor:
    """Copy of ``x`` with bit ``bit`` of elements ``index`` stuck at ``value`` (0 or 1)."""
    if value not in (0, 1):
        raise ConfigError(f"stuck-at value = {value!r}; allowed 0 or 1")
    idx = _check_index(x, index)
    bits = _as_bits(bit, fmt, idx.numel())
    words = to_words(x, fmt).reshape(-1)
    pairs = torch.unique(idx * 64 + bits)
    mask = torch.zeros_like(words).index_put_((pairs // 64,), torch.ones_like(pairs) << (pairs % 64),
                                              accumulate=True)
    return from_words((words | mask) if value else (words & ~mask), fmt).reshape(x.shape)


def sample_distinct(population: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct integers drawn uniformly from ``[0, population)``, in random order."""
    if n > population:
        raise ConfigError(f"asked for {n} distinct faults but only {population} (element, bit) sites exist")
    if n * 4 > population:
        return torch.randperm(population, generator=generator)[:n]
    flat = torch.empty(0, dtype=torch.int64)  # sparse draw: oversample, keep first occurrences
    while flat.numel() < n:
        merged = torch.cat([flat, torch.randint(0, population, (2 * n,), generator=generator)])
        uniq, inv = torch.unique(merged, return_inverse=True)
        first = torch.full((uniq.numel(),), merged.numel(), dtype=torch.int64).scatter_reduce(
            0, inv, torch.arange(merged.numel()), reduce="amin")
        flat = merged[first.sort().values][:n]
    return flat


def random_fault_sites(numel: int, fmt: WordFormat, n: int, generator: torch.Generator,
                       bits: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` distinct random ``(flat index, bit)`` pairs, uniform over elements and the allowed ``bits``."""
    allowed = bits if bits else tuple(range(fmt.width))
    for b in allowed:
        check_bit(b, fmt)
    flat = sample_distinct(numel * len(allowed), n, generator)
    table = torch.tensor(allowed, dtype=torch.int64)
    return flat // len(allowed), table[flat % len(allowed)]


def ber_masks(numel: int, fmt: WordFormat, ber: float, generator: torch.Generator) -> torch.Tensor:
    """Per-element masks of failing bits: each of the ``numel * width`` bits fails with probability ``ber``.

    The number of failing bits is drawn from the binomial law and their positions uniformly without
    replacement, so low rates cost little even for large tensors (equivalent to one Bernoulli per bit).
    """
    check_ber(ber)
    total = numel * fmt.width
    count = int(torch.binomial(torch.tensor(float(total)), torch.tensor(float(ber)), generator=generator))
    masks = torch.zeros(numel, dtype=torch.int64)
    if count == 0:
        return masks
    idx, bit = random_fault_sites(numel, fmt, count, generator)
    masks.index_put_((idx,), torch.ones_like(bit) << bit, accumulate=True)  # distinct sites: sum == or
    return masks


def apply_word_mask(x: torch.Tensor, fmt: WordFormat, masks: torch.Tensor,
                    mode: Literal["flip", "stuck0", "stuck1", "stuck"] = "flip",
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply per-element masks of faulty bits: flip them, force them to 0 / 1, or (``stuck``) to a random
    value per bit (MATIC's low-voltage cells fail to a fixed but data-independent state)."""
    words = to_words(x, fmt).reshape(-1)
    m = masks.reshape(-1).to(torch.int64)
    if mode == "flip":
        out = words ^ m
    elif mode == "stuck0":
        out = words & ~m
    elif mode == "stuck1":
        out = words | m
    elif mode == "stuck":
        if generator is None:
            raise ConfigError("mode 'stuck' draws stuck values and needs a generator (seed)")
        level = torch.randint(0, 1 << 62, m.shape, generator=generator) & m
        out = (words & ~m) | level
    else:
        raise ConfigError(f"fault mode = {mode!r}; allowed flip, stuck0, stuck1, stuck")
    return from_words(out, fmt).reshape(x.shape)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator, *, relative: bool = True) -> torch.Tensor:
    """``x + N(0, s^2)`` with ``s = std * std(x)`` when ``relative`` else ``s = std``."""
    if std < 0:
        raise ConfigError(f"noise std = {std!r}; allowed >= 0")
    s = std * float(x.detach().float().std()) if relative else std
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return x + s * noise


def uniform_noise(x: torch.Tensor, amplitude: float, generator: torch.Generator, *,
                  relative: bool = True) -> torch.Tensor:
    """``x + U(-a, a)`` with ``a = amplitude * max|x|`` when ``relative`` else ``a = amplitude``."""
    if amplitude < 0:
        raise ConfigError(f"noise amplitude = {amplitude!r}; allowed >= 0")
    a = amplitude * float(x.detach().abs().max()) if relative and x.numel() else amplitude
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return x + a * (2 * noise - 1)

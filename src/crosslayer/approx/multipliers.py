"""Behavioural models of 8-bit approximate multipliers as pure, vectorised NumPy functions.

Every model is an *unsigned* 8x8 core ``f(a, b)`` for ``a, b`` in ``[0, 255]`` (int64 arrays in,
int64 array out, broadcasting like ``a * b``). Signed operands use the sign-magnitude wrapper of
:mod:`crosslayer.approx.tables` (``sign(a) sign(b) f(|a|, |b|)``, ``|-128| = 128`` fits the core).
By convention the first operand is the weight and the second the activation; designs that treat the
operands differently (perforation, broken-array rows) act on the partial-product rows selected by the
bits of the *second* operand (the activation), as an array multiplier with the activation as multiplier.

Models (each docstring cites its paper):

- exact array multiplier;
- truncated / broken-array multiplier, BAM (Mahdiani et al., IEEE TCAS-I 2010);
- DRUM-k, dynamic range unbiased multiplier (Hashemi, Bahar, Reda, ICCAD 2015);
- Mitchell's logarithmic multiplier (Mitchell, IRE Trans. Electronic Computers, 1962);
- error-tolerant multiplier, ETM (Kyaw, Goh, Yeo, EDSSC 2010);
- partial-product perforation (Zervakis et al., IEEE TVLSI 2016);
- Kulkarni's under-designed multiplier from approximate 2x2 blocks (Kulkarni et al., VLSI Design 2011).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bam", "drum", "etm", "exact", "kulkarni", "leading_one", "mitchell", "perforated"]

BITS = 8


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if (a < 0).any() or (b < 0).any() or (a >= 1 << BITS).any() or (b >= 1 << BITS).any():
        raise ValueError("unsigned 8-bit multiplier cores take operands in [0, 255]")
    return a, b


def leading_one(x: np.ndarray) -> np.ndarray:
    """Index of the most significant set bit of each element (-1 for zero)."""
    x = np.asarray(x, dtype=np.int64)
    out = np.full(x.shape, -1, dtype=np.int64)
    for bit in range(BITS):
        out = np.where((x >> bit) & 1 == 1, bit, out)
    return out


def exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact 8x8 product (the reference every error metric is measured against)."""
    a, b = _check(a, b)
    return a * b


def bam(a: np.ndarray, b: np.ndarray, *, hbl: int = 0, vbl: int = 0) -> np.ndarray:
    """Broken-array multiplier (Mahdiani, Ahmadi, Fakhraie, Lucas, "Bio-inspired imprecise computational
    blocks for efficient VLSI implementation of soft-computing applications", IEEE TCAS-I 57(4), 2010).

    The carry-save array drops every partial-product cell ``a_i b_j`` left of the vertical break level
    (``i + j < vbl``) and every row below the horizontal break level (``j < hbl``). ``hbl = 0`` is the
    plain truncated multiplier that drops the ``vbl`` least significant product columns.
    """
    a, b = _check(a, b)
    out = np.zeros(np.broadcast(a, b).shape, dtype=np.int64)
    for j in range(hbl, BITS):
        bj = (b >> j) & 1
        for i in range(BITS):
            if i + j >= vbl:
                out += (((a >> i) & 1) & bj) << (i + j)
    return out


def perforated(a: np.ndarray, b: np.ndarray, *, start: int = 0, count: int = 2) -> np.ndarray:
    """Partial-product perforation (Zervakis, Tsoumanis, Xydis, Soudris, Pekmestzi, "Design-efficient
    approximate multiplication circuits through partial product perforation", IEEE TVLSI 24(10), 2016).

    The ``count`` partial products ``a * b_j 2^j`` with ``start <= j < start + count`` are never generated.
    """
    a, b = _check(a, b)
    mask = ((1 << count) - 1) << start
    return a * (b & ~mask & ((1 << BITS) - 1))


def _drum_operand(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """DRUM's k-bit segment of ``x`` (leading one first, unbiasing LSB forced to 1) and its shift."""
    t = leading_one(x)
    shift = np.maximum(t - (k - 1), 0)
    seg = x >> shift
    seg = np.where(shift > 0, seg | 1, seg)
    return seg, shift


def drum(a: np.ndarray, b: np.ndarray, *, k: int = 4) -> np.ndarray:
    """DRUM-k (Hashemi, Bahar, Reda, "DRUM: A dynamic range unbiased multiplier for approximate
    applications", ICCAD 2015).

    Each operand keeps only the ``k`` bits from its leading one down, with the lowest kept bit set to 1
    so that the truncation error is unbiased; the two k-bit segments are multiplied exactly and the
    product shifted back. Operands below ``2^k`` are multiplied exactly.
    """
    a, b = _check(a, b)
    sa, ha = _drum_operand(a, k)
    sb, hb = _drum_operand(b, k)
    return (sa * sb) << (ha + hb)


def mitchell(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mitchell's logarithmic multiplier (J. N. Mitchell, "Computer multiplication and division using
    binary logarithms", IRE Trans. Electronic Computers EC-11(4), 1962).

    With ``a = 2^ka (1 + xa)``, ``log2 a ~ ka + xa``; the logs are added and the antilog approximated
    piecewise-linearly: ``2^(ka+kb) (1 + xa + xb)`` when ``xa + xb < 1``, else ``2^(ka+kb+1) (xa + xb)``.
    Evaluated here exactly in integers (the fractions of 8-bit operands have at most 7 bits). Always
    underestimates (at most -11.1 %).
    """
    a, b = _check(a, b)
    ka = np.maximum(leading_one(a), 0)
    kb = np.maximum(leading_one(b), 0)
    base = (1 << (ka + kb))
    s = a * (1 << kb) + b * (1 << ka)  # 2^(ka+kb) (2 + xa + xb)
    small = s - base  # 2^(ka+kb) (1 + xa + xb)
    large = 2 * (s - 2 * base)  # 2^(ka+kb+1) (xa + xb)
    out = np.where(s < 3 * base, small, large)
    return np.where((a == 0) | (b == 0), 0, out)


def etm(a: np.ndarray, b: np.ndarray, *, low: int = 4) -> np.ndarray:
    """Error-tolerant multiplier (Kyaw, Goh, Yeo, "Cost-efficient error-tolerant multiplier for
    high-speed applications", IEEE EDSSC 2010).

    The operands are split into a multiplication part (the ``8 - low`` MSBs) and a non-multiplication
    part (the ``low`` LSBs). When both MSB parts are zero the LSB parts are multiplied exactly.
    Otherwise the MSB parts are multiplied exactly (bits ``2 low`` and up) and the cross and low terms
    are replaced by the non-multiplication part: scanning the LSB parts from their top bit down, the
    first position ``p`` at which either operand has a 1 sets that and every lower result bit,
    i.e. ``2^(p + low + 1) - 1`` (our reading of the paper's bit-level description). Being OR-based,
    the low part is non-zero for ``0 x b`` when ``b`` has a non-zero MSB part: pruned (zero) weights
    still contribute, a real property of the design that the emulation keeps.
    """
    a, b = _check(a, b)
    mask = (1 << low) - 1
    ah, al, bh, bl = a >> low, a & mask, b >> low, b & mask
    p = leading_one(al | bl)
    fill = np.where(p >= 0, (1 << (p + low + 1)) - 1, 0)
    approx = ((ah * bh) << (2 * low)) + fill
    return np.where((ah == 0) & (bh == 0), al * bl, approx)


def _kul(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
    if width == 2:
        return np.where((a == 3) & (b == 3), 7, a * b)
    h = width // 2
    m = (1 << h) - 1
    ah, al, bh, bl = a >> h, a & m, b >> h, b & m
    return (_kul(ah, bh, h) << (2 * h)) + ((_kul(ah, bl, h) + _kul(al, bh, h)) << h) + _kul(al, bl, h)


def kulkarni(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Under-designed multiplier (Kulkarni, Gupta, Ercegovac, "Trading accuracy for power with an
    underdesigned multiplier architecture", VLSI Design 2011).

    The 2x2 building block outputs 3 bits and gives ``3 x 3 = 7`` instead of 9; larger multipliers are
    built recursively from four half-width blocks whose partial products are added exactly.
    """
    a, b = _check(a, b)
    return _kul(a, b, BITS)

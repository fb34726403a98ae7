"""Packing arrays of fixed-width unsigned integers into bytes and back (MSB first), vectorised with NumPy.

Hand-written because NumPy only packs single bits (``np.packbits``); this spreads each value over
``width`` bits and packs the resulting bit matrix in one call.
"""

from __future__ import annotations

import numpy as np

from crosslayer.errors import CrossLayerError

__all__ = ["pack_uint", "packed_nbytes", "unpack_bits", "unpack_uint"]


def packed_nbytes(count: int, width: int) -> int:
    return (count * width + 7) // 8


def pack_uint(values: np.ndarray, width: int) -> bytes:
    """``values`` (non-negative ints < 2**width) as a big-endian bit stream padded to whole bytes."""
    if not 1 <= width <= 32:
        raise CrossLayerError(f"bit width {width} out of range [1, 32]")
    v = np.asarray(values, dtype=np.uint64).ravel()
    if v.size and int(v.max()) >= (1 << width):
        raise CrossLayerError(f"value {int(v.max())} does not fit in {width} bits")
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = ((v[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_uint(data: bytes, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; raises if ``data`` is too short for ``count`` values.

    Works one bit column at a time, so the temporary memory is one byte per stored bit plus the int64 result
    (a packed stream is read from untrusted files: no ``count x width x 8``-byte intermediate).
    """
    if not 1 <= width <= 32:
        raise CrossLayerError(f"bit width {width} out of range [1, 32]")
    if count < 0:
        raise CrossLayerError(f"negative value count {count}")
    need = packed_nbytes(count, width)
    if len(data) < need:
        raise CrossLayerError(f"bit stream too short: {len(data)} bytes for {count} values of {width} bits")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=need))[: count * width].reshape(count, width)
    out = np.zeros(count, dtype=np.int64)
    for j in range(width):
        out <<= 1
        out |= bits[:, j]
    return out


def unpack_bits(data: bytes, count: int) -> np.ndarray:
    """``count`` single bits (MSB first) as a bool array: the inverse of ``pack_uint(mask, 1)``."""
    if count < 0 or len(data) < packed_nbytes(count, 1):
        raise CrossLayerError(f"bit stream too short: {len(data)} bytes for {count} bits")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=packed_nbytes(count, 1)))[:count].astype(bool)

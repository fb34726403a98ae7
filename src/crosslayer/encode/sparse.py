"""Sparse weight encodings: relative-index CSR / CSC and a bitmask format, with their exact storage.

Relative indexing follows Han et al., "Deep Compression", ICLR 2016 (Fig. 2): each stored entry keeps the
number of zeros skipped before it in ``index_bits`` bits; a gap that does not fit is bridged by filler
entries (a zero value that skips the maximum run). Deep Compression uses 8-bit indices for conv and
5-bit for fc layers. CSR applies this inside each row (output channel) with a row-pointer array; CSC
inside each column; the bitmask format stores one presence bit per weight.

Where the fillers go, and the storage result type, belong to :mod:`crosslayer.prune.storage` (the one
owner of relative-index accounting); this module lays the entries out and decodes them. Values are integer
codes (e.g. quantized weights); accounting is in bits, exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crosslayer.errors import CrossLayerError
from crosslayer.prune.storage import TensorStorage, relative_index_layout

__all__ = ["BitmaskEncoding", "RelativeCSR", "decode_relative", "encode_bitmask", "encode_csc", "encode_csr",
           "encode_relative", "relative_entries"]


def relative_entries(row: np.ndarray, index_bits: int, *, cover_tail: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(values, gaps) of one 1-D sequence with fillers; vectorised over the non-zeros.

    ``cover_tail``: also bridge the zeros after the last non-zero with fillers, so fewer than
    ``2**index_bits`` positions stay uncovered at the end. Then a row of ``k`` entries is at most
    ``(k + 1) * 2**index_bits`` long, which lets a reader bound the size an encoding can claim.
    """
    if not 1 <= index_bits <= 16:
        raise CrossLayerError(f"index_bits {index_bits} out of range [1, 16]")
    flat = np.asarray(row).ravel()
    pos = np.flatnonzero(flat)
    span = 1 << index_bits                                    # a filler skips span-1 zeros and is itself one
    runs, n_fill, n_tail = relative_index_layout(pos, flat.size, index_bits, cover_tail=cover_tail)
    rem = runs - n_fill * span
    total = int(pos.size + n_fill.sum()) + n_tail
    values = np.zeros(total, dtype=flat.dtype)
    gaps = np.full(total, span - 1, dtype=np.int64)
    real_at = np.cumsum(n_fill + 1) - 1                       # index of each real entry after its fillers
    values[real_at] = flat[pos]
    gaps[real_at] = rem
    return values, gaps


def encode_relative(flat: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative-index encoding of a whole flattened tensor (Deep Compression's layout)."""
    return relative_entries(np.asarray(flat).ravel(), index_bits)


def decode_relative(values: np.ndarray, gaps: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`encode_relative`; raises if the entries run past ``length``."""
    if len(values) != len(gaps):
        raise CrossLayerError("relative encoding: values and gaps differ in length")
    out = np.zeros(length, dtype=np.asarray(values).dtype)
    if len(values) == 0:
        return out
    positions = np.cumsum(np.asarray(gaps, dtype=np.int64) + 1) - 1
    if positions[-1] >= length or (np.asarray(gaps) < 0).any():
        raise CrossLayerError(f"relative encoding runs past the tensor ({int(positions[-1]) + 1} > {length})")
    out[positions] = values
    return out


@dataclass(frozen=True)
class RelativeCSR:
    """Row-compressed matrix: per row, relative-index entries; ``row_counts`` entries per row."""

    shape: tuple[int, int]
    values: np.ndarray
    gaps: np.ndarray
    row_counts: np.ndarray
    index_bits: int
    transposed: bool = False  # True: this is CSC (rows are the columns of the original)

    def pointer_bits(self) -> int:
        """Width of one row pointer: enough for the largest cumulative count."""
        return max(1, int(self.values.size).bit_length())

    def storage(self, value_bits: int, name: str = "") -> TensorStorage:
        """Exact storage in bits: values and relative indices of every entry (fillers included), row pointers."""
        fillers = int((self.values == 0).sum())
        return TensorStorage(name=name, numel=self.shape[0] * self.shape[1], nonzeros=int(self.values.size) - fillers,
                             value_bits=value_bits, format="csc" if self.transposed else "csr",
                             index_bits=self.index_bits, fillers=fillers,
                             pointer_bits=(self.shape[0] + 1) * self.pointer_bits())

    def to_dense(self) -> np.ndarray:
        rows, cols = self.shape
        out = np.zeros((rows, cols), dtype=self.values.dtype)
        start = 0
        for r, c in enumerate(self.row_counts.tolist()):
            out[r] = decode_relative(self.values[start:start + c], self.gaps[start:start + c], cols)
            start += c
        return out.T if self.transposed else out


def _as_matrix(w: np.ndarray) -> np.ndarray:
    a = np.asarray(w)
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)


def encode_csr(w: np.ndarray, index_bits: int, *, transposed: bool = False, cover_tail: bool = False) -> RelativeCSR:
    """Relative-index CSR of ``w`` viewed as (rows = first axis, columns = the rest); ``cover_tail`` as in
    :func:`relative_entries` (the packed file sets it)."""
    m = _as_matrix(w)
    if transposed:
        m = m.T
    parts = [relative_entries(row, index_bits, cover_tail=cover_tail) for row in m]
    values = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=m.dtype)
    gaps = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    counts = np.array([len(p[0]) for p in parts], dtype=np.int64)
    return RelativeCSR((m.shape[0], m.shape[1]), values, gaps, counts, index_bits, transposed)


def encode_csc(w: np.ndarray, index_bits: int) -> RelativeCSR:
    """Relative-index CSC: CSR of the transpose (columns = inputs of an fc layer, EIE's layout)."""
    return encode_csr(w, index_bits, transposed=True)


@dataclass(frozen=True)
class BitmaskEncoding:
    """One presence bit per weight plus the non-zero values."""

    shape: tuple[int, ...]
    mask: np.ndarray
    values: np.ndarray

    def storage(self, value_bits: int, name: str = "") -> TensorStorage:
        """Exact storage in bits: one presence bit per weight, the non-zero values."""
        return TensorStorage(name=name, numel=int(self.mask.size), nonzeros=int(self.values.size),
                             value_bits=value_bits, format="bitmask", index_bits=1)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.mask.size, dtype=self.values.dtype)
        out[self.mask.ravel()] = self.values
        return out.reshape(self.shape)


def encode_bitmask(w: np.ndarray) -> BitmaskEncoding:
    a = np.asarray(w)
    mask = a != 0
    return BitmaskEncoding(tuple(a.shape), mask, a[mask])

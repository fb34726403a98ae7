"""Canonical Huffman coding of integer symbols (Huffman, Proc. IRE 1952), as Deep Compression applies it
to quantized weight codes and relative indices (Han et al., ICLR 2016, Sec. 4).

Hand-written rather than taken from a package: the codebook must be stored compactly (canonical code
lengths only), decoding must be vectorised enough for a 431k-weight model, and the bit accounting must be
exact. Code lengths are limited to ``MAX_LEN`` bits so the stored lengths fit in 5 bits.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from crosslayer.encode.bits import pack_uint
from crosslayer.errors import CrossLayerError

__all__ = ["HuffmanCode", "build_code", "decode", "encode"]

MAX_LEN = 24


@dataclass(frozen=True)
class HuffmanCode:
    """Canonical code: symbols sorted by (length, symbol) get consecutive codewords."""

    symbols: np.ndarray   # int64, the alphabet in canonical order
    lengths: np.ndarray   # code length of each symbol, same order

    def codewords(self) -> np.ndarray:
        codes = np.zeros(len(self.symbols), dtype=np.int64)
        code, prev = 0, int(self.lengths[0]) if len(self.lengths) else 0
        for i, ln in enumerate(self.lengths.tolist()):
            code <<= ln - prev
            codes[i] = code
            code += 1
            prev = ln
        return codes

    def codebook_bits(self, symbol_bits: int) -> int:
        """Stored codebook: per symbol its value (``symbol_bits``) and its length (5 bits), plus a 16-bit count."""
        return 16 + len(self.symbols) * (symbol_bits + 5)

    def payload_bits(self, data: np.ndarray) -> int:
        lut = dict(zip(self.symbols.tolist(), self.lengths.tolist(), strict=True))
        vals, counts = np.unique(np.asarray(data, dtype=np.int64), return_counts=True)
        return int(sum(lut[int(v)] * int(c) for v, c in zip(vals, counts, strict=True)))


def _lengths(freqs: dict[int, int]) -> dict[int, int]:
    """Code length of each symbol: merge the two rarest nodes (heap), then read depths off parent links."""
    if len(freqs) == 1:
        return {next(iter(freqs)): 1}
    symbols = sorted(freqs)
    heap = [(freqs[s], i) for i, s in enumerate(symbols)]
    heapq.heapify(heap)
    parent = list(range(len(symbols)))
    nxt = len(symbols)
    while len(heap) > 1:
        f1, a = heapq.heappop(heap)
        f2, b = heapq.heappop(heap)
        parent.append(nxt)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (f1 + f2, nxt))
        nxt += 1
    depth = [0] * nxt
    for node in range(nxt - 2, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    return {s: depth[i] for i, s in enumerate(symbols)}


def build_code(data: np.ndarray) -> HuffmanCode:
    """Optimal prefix code for the symbols in ``data`` (lengths flattened to at most ``MAX_LEN``)."""
    arr = np.asarray(data, dtype=np.int64).ravel()
    if arr.size == 0:
        return HuffmanCode(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    vals, counts = np.unique(arr, return_counts=True)
    freqs = dict(zip(vals.tolist(), counts.tolist(), strict=True))
    while True:
        lengths = _lengths(freqs)
        if max(lengths.values()) <= MAX_LEN:
            break
        freqs = {s: (f + 1) // 2 + 1 for s, f in freqs.items()}  # flatten the distribution, retry
    order = sorted(lengths, key=lambda s: (lengths[s], s))
    return HuffmanCode(np.array(order, dtype=np.int64), np.array([lengths[s] for s in order], dtype=np.int64))


def encode(data: np.ndarray, code: HuffmanCode) -> tuple[bytes, int]:
    """Bit stream of ``data`` under ``code`` (padded to bytes) and its exact length in bits."""
    arr = np.asarray(data, dtype=np.int64).ravel()
    if arr.size == 0:
        return b"", 0
    sorter = np.argsort(code.symbols)
    pos = np.searchsorted(code.symbols, arr, sorter=sorter)
    if (pos >= len(sorter)).any() or (code.symbols[sorter[np.minimum(pos, len(sorter) - 1)]] != arr).any():
        raise CrossLayerError("symbol not in the Huffman code")
    idx = sorter[pos]
    words, lens = code.codewords()[idx], code.lengths[idx]
    n_bits = int(lens.sum())
    max_len = int(lens.max())
    # Left-align each codeword in max_len bits, spread to a bit matrix, keep each row's first `len` bits.
    aligned = words << (max_len - lens)
    shifts = np.arange(max_len - 1, -1, -1, dtype=np.int64)
    bitmat = (aligned[:, None] >> shifts[None, :]) & 1
    keep = np.arange(max_len)[None, :] < lens[:, None]
    stream = np.packbits(bitmat[keep].astype(np.uint8)).tobytes()
    return stream, n_bits


def decode(stream: bytes, n_bits: int, count: int, code: HuffmanCode) -> np.ndarray:
    """Decode ``count`` symbols from the first ``n_bits`` of ``stream``; raises on a malformed stream."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if len(code.symbols) == 0:
        raise CrossLayerError("empty Huffman code for a non-empty stream")
    if n_bits > len(stream) * 8:
        raise CrossLayerError("Huffman stream shorter than its declared length")
    if count > n_bits:
        raise CrossLayerError(f"{n_bits} bits cannot hold {count} Huffman symbols (at least one bit each)")
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))[:n_bits]
    words = code.codewords()
    # Canonical decoding tables: for each length, the first code and the index of its first symbol.
    max_len = int(code.lengths.max())
    first_code = np.full(max_len + 2, -1, dtype=np.int64)
    first_index = np.zeros(max_len + 2, dtype=np.int64)
    count_len = np.bincount(code.lengths, minlength=max_len + 2)
    for ln in range(1, max_len + 1):
        if count_len[ln]:
            i = int(np.argmax(code.lengths == ln))
            first_code[ln], first_index[ln] = words[i], i
    out = np.empty(count, dtype=np.int64)
    acc, ln, k = 0, 0, 0
    chunk = 1 << 16  # bits turned into a Python list at a time (bounded memory on any stream length)
    for start in range(0, n_bits, chunk):
        for bit in bits[start:start + chunk].tolist():
            acc = (acc << 1) | bit
            ln += 1
            if ln > max_len:
                raise CrossLayerError("invalid Huffman codeword in stream")
            if count_len[ln] and 0 <= acc - first_code[ln] < count_len[ln]:
                out[k] = code.symbols[first_index[ln] + acc - first_code[ln]]
                k += 1
                acc, ln = 0, 0
                if k == count:
                    return out
    raise CrossLayerError("Huffman stream ended before all symbols were decoded")


def codebook_bytes(code: HuffmanCode, symbol_bits: int, offset: int = 0) -> bytes:
    """Serialised codebook: symbols (shifted by ``offset`` to be non-negative) then 5-bit lengths."""
    syms = code.symbols + offset
    return pack_uint(syms, symbol_bits) + pack_uint(code.lengths, 5)

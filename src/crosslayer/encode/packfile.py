"""The packed model file (``.xlm``): a versioned, checksummed, byte-exact container of a compressed model.

Layout (little-endian)::

    magic b"XLM\\x00" | version u16 | flags u16 | n_layers u32 | arch_len u32 | arch JSON (op list)
    n_layers × layer record (name, shape, quantization, bias, encoding, pointer / value / index streams)
    crc32 u32 of everything before it

A record's quantization is its per-tensor or per-channel float32 scales, then float32 zero points only when
some are non-zero (bit 31 of the scale count says so): symmetric codes, the common case, pay for no zero
points (about 2 KB of a 30 KB LeNet-5).

Each layer stores its weight codes in the smallest of: dense fixed-width, relative-index CSR or CSC
(Deep Compression, Han et al., ICLR 2016) or a bitmask, each stream (values, indices) fixed-width or
Huffman coded, whichever is smaller. Every byte written is tagged (header / values / indices / codebook /
pointers / bias) so :func:`accounting` is exact and the file's size equals its sum.

The reader treats the file as hostile; any defect raises ``PackFormatError``, nothing else:

- magic, version, checksum and flags first; every length is checked against the bytes that remain before
  anything is allocated;
- the architecture JSON must be a list of ops of known kinds with exactly their parameters (pairs of
  integers in [0, 255], kernels / strides positive, pooling padding at most half the kernel), named
  conv / linear ops matching the layer records one to one (name, kind, conv geometry), no duplicates;
- each record: 2-16-bit codes or float32, finite positive scales, finite zero points / biases / float
  weights, 2-16-bit activation quantization, positive conv stride and dilation;
- sizes: at most ``MAX_NUMEL`` weights a layer and ``MAX_TOTAL_NUMEL`` a file, and never more than the
  encoded entries justify (a dense or bitmask record pays at least a bit a weight; a CSR / CSC record of
  n entries spans at most ``(n + rows) * 2**index_bits`` weights, since the writer bridges every zero run,
  trailing ones included, with filler entries);
- the op list must chain: conv input channels, linear input features (a multiple of the channels
  flattened before it), no conv or pooling after a flatten. The input's spatial size is not stored, so a
  wrong-sized input is caught by torch when the model runs, not here.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crosslayer.encode import huffman
from crosslayer.encode.bits import pack_uint, packed_nbytes, unpack_bits, unpack_uint
from crosslayer.encode.graph import Op, build_sequential, extract_ops, fold_batchnorm
from crosslayer.encode.sparse import encode_bitmask, encode_csr
from crosslayer.errors import CrossLayerError, StageError
from crosslayer.fileio import atomic_write_bytes
from crosslayer.quant.fixed_point import FixedPointSpec, quantize_tensor
from crosslayer.quant.layers import QuantConv2d, QuantLayer, QuantLinear

__all__ = ["FORMAT_VERSION", "MAX_FILE_BYTES", "LayerCodes", "PackFormatError", "layer_codes", "pack_model",
           "read_packed", "unpack_model", "write_packed"]

MAGIC = b"XLM\x00"
FORMAT_VERSION = 2                  # 2: zero points stored only when some are non-zero
ZP_STORED = 1 << 31                 # flag in a record's scale count: float32 zero points follow the scales
MAX_LAYERS = 4096
MAX_NUMEL = 1 << 24
MAX_NAME = 1024
MAX_ARCH = 1 << 20
MAX_OPS = 4 * MAX_LAYERS
MAX_TOTAL_NUMEL = 1 << 26
MAX_FILE_BYTES = 4 * MAX_TOTAL_NUMEL + 2 * MAX_ARCH + (1 << 20)
"""No legal file is larger: at most 32 bits per weight plus the architecture and tables; read no more."""
F32_MAX = float(np.finfo(np.float32).max)
ENC_DENSE, ENC_CSR, ENC_CSC, ENC_BITMASK = 0, 1, 2, 3
ENC_NAMES = {ENC_DENSE: "dense", ENC_CSR: "csr", ENC_CSC: "csc", ENC_BITMASK: "bitmask"}


class PackFormatError(CrossLayerError):
    """A packed model file that is truncated, corrupted, of another version, or claims more than it holds."""


@dataclass
class LayerCodes:
    """What a layer record holds: integer weight codes (or float32 bit patterns), quantization, bias."""

    name: str
    kind: str                       # conv or linear
    shape: tuple[int, ...]
    codes: np.ndarray               # int64, weight codes (float layers: float32 bits as int)
    bits: int                       # 1-16 for codes, 32 for float
    signed: bool
    scale: np.ndarray               # float32, 1 or out_channels values (unused for float)
    zero_point: np.ndarray          # float32, same length
    bias: np.ndarray | None
    act: dict[str, Any] | None = None   # {"bits", "signed", "symmetric", "lo", "hi"}
    conv: dict[str, Any] = field(default_factory=dict)

    @property
    def is_float(self) -> bool:
        return self.bits == 32


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.tags: dict[str, int] = defaultdict(int)

    def put(self, data: bytes, tag: str) -> None:
        self.buf += data
        self.tags[tag] += len(data)

    def fmt(self, f: str, *vals: Any, tag: str = "header") -> None:
        self.put(struct.pack("<" + f, *vals), tag)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining():
            raise PackFormatError(f"truncated file: {what} needs {n} bytes, {self.remaining()} remain")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def fmt(self, f: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + f, self.take(struct.calcsize("<" + f), what))


# ---------------------------------------------------------------- codes of a model
def layer_codes(name: str, m: nn.Module, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> LayerCodes:
    """The codes a layer record stores: integer codes for a quantized layer, float32 bits otherwise."""
    src: torch.Tensor = weight if weight is not None else m.get_parameter("weight")
    w = src.detach().cpu().float()
    b = bias if bias is not None else getattr(m, "bias", None)
    b_np = None if b is None else b.detach().cpu().float().numpy().astype(np.float32)
    kind = "conv" if isinstance(m, nn.Conv2d) else "linear"
    act = None
    if isinstance(m, QuantLayer) and m.act_spec is not None and m.act_calibrated:
        s = m.act_spec
        act = {"bits": s.bits, "signed": s.signed, "symmetric": s.symmetric, "lo": float(m.act_lo),
               "hi": float(m.act_hi)}
    if isinstance(m, QuantLayer) and m.weight_spec is not None and weight is None:
        q = quantize_tensor(w, m.weight_spec)
        return LayerCodes(name, kind, tuple(w.shape), q.codes.numpy().astype(np.int64).ravel(), m.weight_spec.bits,
                          m.weight_spec.signed, q.scale.reshape(-1).numpy().astype(np.float32),
                          q.zero_point.reshape(-1).numpy().astype(np.float32), b_np, act)
    bits = w.numpy().astype(np.float32).view(np.uint32).astype(np.int64).ravel()
    return LayerCodes(name, kind, tuple(w.shape), bits, 32, False, np.ones(1, np.float32),
                      np.zeros(1, np.float32), b_np, act)


# ---------------------------------------------------------------- streams
def _stream(w: _Writer, data: np.ndarray, width: int, signed: bool, tag: str) -> None:
    """Fixed-width or Huffman, whichever is smaller. Prefix: mode u8, then mode-specific lengths."""
    offset = (1 << (width - 1)) if signed else 0
    fixed = pack_uint(data + offset, width) if data.size else b""
    # float32 bit patterns are nearly all distinct: Huffman cannot pay for its codebook there.
    code = huffman.build_code(data) if data.size and width <= 16 else None
    if code is not None and len(code.symbols) > 1:
        stream, nbits = huffman.encode(data, code)
        book = huffman.codebook_bytes(code, width, offset)
        if len(stream) + len(book) + 6 < len(fixed):
            w.fmt("BHI", 1, len(code.symbols), nbits)
            w.put(book, "codebook")
            w.put(stream, tag)
            return
    w.fmt("B", 0)
    w.put(fixed, tag)


def _read_stream(r: _Reader, count: int, width: int, signed: bool, what: str) -> np.ndarray:
    offset = (1 << (width - 1)) if signed else 0
    (mode,) = r.fmt("B", what)
    if mode == 0:
        return unpack_uint(r.take(packed_nbytes(count, width), what), count, width) - offset
    if mode != 1:
        raise PackFormatError(f"{what}: unknown stream mode {mode}")
    nsym, nbits = r.fmt("HI", what)
    if nsym == 0 or nsym > min(count, 1 << width):
        raise PackFormatError(f"{what}: Huffman codebook claims {nsym} symbols for {count} values")
    book = r.take(packed_nbytes(nsym, width) + packed_nbytes(nsym, 5), f"{what} codebook")
    syms = unpack_uint(book, nsym, width) - offset
    lengths = unpack_uint(book[packed_nbytes(nsym, width):], nsym, 5)
    if (lengths == 0).any() or not np.all(np.diff(lengths) >= 0):
        raise PackFormatError(f"{what}: malformed Huffman codebook")
    if sum(2.0 ** -float(ln) for ln in lengths) > 1.0 + 1e-12:
        raise PackFormatError(f"{what}: Huffman code lengths violate the Kraft inequality")
    if nbits < count or nbits > count * int(lengths.max()):
        raise PackFormatError(f"{what}: stream of {nbits} bits cannot hold {count} symbols")
    stream = r.take((nbits + 7) // 8, what)
    try:
        return huffman.decode(stream, nbits, count, huffman.HuffmanCode(syms, lengths))
    except CrossLayerError as exc:
        raise PackFormatError(f"{what}: {exc}") from exc


# ---------------------------------------------------------------- layer records
def _sparse_candidates(codes: np.ndarray, shape: tuple[int, ...], index_bits: int) -> dict[int, Any]:
    mat = codes.reshape(shape[0], -1)
    return {ENC_CSR: encode_csr(mat, index_bits, cover_tail=True),
            ENC_CSC: encode_csr(mat, index_bits, transposed=True, cover_tail=True),
            ENC_BITMASK: encode_bitmask(mat)}


def _write_weights(w: _Writer, lc: LayerCodes, enc: int, obj: Any, index_bits: int) -> None:
    w.fmt("BB", enc, index_bits)
    if enc == ENC_DENSE:
        w.fmt("I", lc.codes.size)
        _stream(w, lc.codes, lc.bits, lc.signed and not lc.is_float, "values")
    elif enc == ENC_BITMASK:
        w.fmt("I", obj.values.size)
        w.put(pack_uint(obj.mask.ravel().astype(np.int64), 1), "indices")
        _stream(w, obj.values.astype(np.int64), lc.bits, lc.signed, "values")
    else:
        pbits = obj.pointer_bits()
        w.fmt("IIB", obj.values.size, obj.shape[0], pbits)
        w.put(pack_uint(obj.row_counts, pbits), "pointers")
        _stream(w, obj.values.astype(np.int64), lc.bits, lc.signed, "values")
        _stream(w, obj.gaps, index_bits, False, "indices")


def _best_weights(lc: LayerCodes, index_bits: int) -> _Writer:
    """Encode the weights every applicable way and keep the smallest (ties: the simpler format)."""
    candidates: dict[int, Any] = {ENC_DENSE: None}
    if not lc.is_float and (lc.codes == 0).mean() > 0.3:
        candidates.update(_sparse_candidates(lc.codes, lc.shape, index_bits))
    best: _Writer | None = None
    for enc, obj in candidates.items():
        trial = _Writer()
        _write_weights(trial, lc, enc, obj, index_bits)
        if best is None or len(trial.buf) < len(best.buf):
            best = trial
    assert best is not None
    return best


def _check_writable(lc: LayerCodes) -> None:
    """Refuse what the reader would reject: 1-bit codes (binary weights / activations) and non-finite numbers."""
    if not (2 <= lc.bits <= 16 or lc.bits == 32) or (lc.act is not None and not 2 <= lc.act["bits"] <= 16):
        raise StageError(f"layer {lc.name!r}: only 2-16-bit codes (or float32 weights) can be packed, got "
                         f"{lc.bits}-bit weights" + (f" / {lc.act['bits']}-bit activations" if lc.act else ""))
    parts = {"bias": lc.bias if lc.bias is not None else np.zeros(0, np.float32)}
    if lc.is_float:
        parts["weight"] = lc.codes.astype(np.uint32).view(np.float32)
    else:
        parts["scale / zero point"] = np.concatenate([lc.scale, lc.zero_point])
    for what, arr in parts.items():
        if not np.isfinite(arr).all():
            raise StageError(f"layer {lc.name!r} has a non-finite {what} and cannot be packed")


def _write_layer(w: _Writer, lc: LayerCodes, index_bits: int) -> int:
    """Append one layer record; returns the weight encoding it chose (``ENC_*``)."""
    name = lc.name.encode("utf-8")
    w.fmt("H", len(name))
    w.put(name, "header")
    w.fmt("BB", 0 if lc.kind == "conv" else 1, len(lc.shape))
    w.fmt(f"{len(lc.shape)}I", *lc.shape)
    w.fmt("BB", lc.bits, int(lc.signed))
    has_zp = bool((lc.zero_point != 0).any())  # symmetric quantization: all zero, so not stored
    w.fmt("I", lc.scale.size | (ZP_STORED if has_zp else 0))
    w.put(lc.scale.astype("<f4").tobytes() + (lc.zero_point.astype("<f4").tobytes() if has_zp else b""), "header")
    conv = lc.conv or {}
    w.fmt("6B", *(conv.get("stride", (1, 1)) + conv.get("padding", (0, 0)) + conv.get("dilation", (1, 1))))
    if lc.act is None:
        w.fmt("B", 0)
    else:
        w.fmt("BBBff", lc.act["bits"], int(lc.act["signed"]), int(lc.act["symmetric"]), lc.act["lo"], lc.act["hi"])
    if lc.bias is None:
        w.fmt("B", 0)
    else:
        w.fmt("BI", 1, lc.bias.size)
        w.put(lc.bias.astype("<f4").tobytes(), "bias")
    best = _best_weights(lc, index_bits)
    w.buf += best.buf
    for tag, n in best.tags.items():
        w.tags[tag] += n
    return int(best.buf[0])


def _finite(arr: np.ndarray, where: str, what: str) -> None:
    if not np.isfinite(arr).all():
        raise PackFormatError(f"{where}: non-finite {what}")


def _read_layer(r: _Reader, i: int, expect: Op, budget: int) -> LayerCodes:
    """One layer record; ``expect`` is its op in the architecture, ``budget`` the weights still allowed."""
    where = f"layer {i}"
    (nlen,) = r.fmt("H", where)
    if nlen > MAX_NAME:
        raise PackFormatError(f"{where}: name of {nlen} bytes")
    try:
        name = r.take(nlen, where).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackFormatError(f"{where}: name is not UTF-8") from exc
    if name != expect.name:
        raise PackFormatError(f"{where}: record {name!r} where the architecture has {expect.name!r}")
    where = f"layer {name!r}"
    kind_id, ndim = r.fmt("BB", where)
    if kind_id not in (0, 1) or ndim not in ((4,) if kind_id == 0 else (2,)):
        raise PackFormatError(f"{where}: bad kind {kind_id} / rank {ndim}")
    kind = "conv" if kind_id == 0 else "linear"
    if kind != expect.kind:
        raise PackFormatError(f"{where}: record of a {kind} layer where the architecture has a {expect.kind}")
    shape = tuple(int(d) for d in r.fmt(f"{ndim}I", where))
    numel = math.prod(shape)  # Python ints: four u32 dimensions can overflow int64
    if numel == 0 or numel > MAX_NUMEL:
        raise PackFormatError(f"{where}: shape {shape} out of bounds (1 to {MAX_NUMEL} weights)")
    if numel > budget:
        raise PackFormatError(f"{where}: shape {shape} takes the model past {MAX_TOTAL_NUMEL} weights")
    bits, signed = r.fmt("BB", where)
    if not (2 <= bits <= 16 or bits == 32) or signed > 1 or (bits == 32 and signed):
        raise PackFormatError(f"{where}: bad bit width {bits} / signedness {signed} (allowed: 2-16 bits, or 32 "
                              "unsigned for float weights)")
    (nscale,) = r.fmt("I", where)
    has_zp, nscale = bool(nscale & ZP_STORED), nscale & ~ZP_STORED
    if nscale not in (1, shape[0]):
        raise PackFormatError(f"{where}: {nscale} scales for {shape[0]} channels")
    scale = np.frombuffer(r.take(4 * nscale, where), dtype="<f4").astype(np.float32)
    zp = (np.frombuffer(r.take(4 * nscale, where), dtype="<f4").astype(np.float32) if has_zp
          else np.zeros(nscale, np.float32))
    if bits != 32:
        _finite(np.concatenate([scale, zp]), where, "scale or zero point")
        if (scale <= 0).any():
            raise PackFormatError(f"{where}: non-positive weight scale")
    geo = r.fmt("6B", where)
    conv = {"stride": tuple(geo[0:2]), "padding": tuple(geo[2:4]), "dilation": tuple(geo[4:6])}
    if kind == "conv":
        if min(conv["stride"] + conv["dilation"]) < 1:
            raise PackFormatError(f"{where}: stride / dilation must be positive, got {conv}")
        if any(conv[k] != expect.param(k) for k in conv):
            raise PackFormatError(f"{where}: geometry {conv} disagrees with the architecture {dict(expect.params)}")
    elif geo != (1, 1, 0, 0, 1, 1):
        raise PackFormatError(f"{where}: a linear layer with conv geometry {geo}")
    (abits,) = r.fmt("B", where)
    act = None
    if abits:
        a_signed, a_sym, lo, hi = r.fmt("BBff", where)
        if (not 2 <= abits <= 16 or a_signed > 1 or a_sym > 1 or lo > hi
                or not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo > F32_MAX):  # the width must be finite too
            raise PackFormatError(f"{where}: bad activation quantization ({abits} bits, range [{lo}, {hi}])")
        act = {"bits": abits, "signed": bool(a_signed), "symmetric": bool(a_sym), "lo": lo, "hi": hi}
    (has_bias,) = r.fmt("B", where)
    if has_bias > 1:
        raise PackFormatError(f"{where}: bias flag {has_bias}")
    bias = None
    if has_bias:
        (nb,) = r.fmt("I", where)
        if nb != shape[0]:
            raise PackFormatError(f"{where}: bias of {nb} values for {shape[0]} outputs")
        bias = np.frombuffer(r.take(4 * nb, where), dtype="<f4").astype(np.float32)
        _finite(bias, where, "bias")
    enc, index_bits = r.fmt("BB", where)
    if enc not in ENC_NAMES or not 1 <= index_bits <= 16:
        raise PackFormatError(f"{where}: unknown encoding {enc} / index bits {index_bits}")
    is_signed = bool(signed) and bits != 32
    if enc == ENC_DENSE:
        (n,) = r.fmt("I", where)
        if n != numel:
            raise PackFormatError(f"{where}: dense record with {n} values for {numel} weights")
        codes = _read_stream(r, n, bits, is_signed, f"{where} values")
    elif enc == ENC_BITMASK:
        (n,) = r.fmt("I", where)
        mask = unpack_bits(r.take(packed_nbytes(numel, 1), f"{where} mask"), numel)
        if int(mask.sum()) != n:
            raise PackFormatError(f"{where}: bitmask holds {int(mask.sum())} entries, record says {n}")
        codes = np.zeros(numel, dtype=np.int64)
        codes[mask] = _read_stream(r, n, bits, is_signed, f"{where} values")
    else:
        codes = _read_sparse(r, where, enc, shape, bits, is_signed, index_bits)
    if bits == 32:
        _finite(codes.astype(np.uint32).view(np.float32), where, "weight")
    return LayerCodes(name, kind, shape, codes, bits, bool(signed), scale, zp, bias, act, conv)


def _read_sparse(r: _Reader, where: str, enc: int, shape: tuple[int, ...], bits: int, is_signed: bool,
                 index_bits: int) -> np.ndarray:
    """A CSR / CSC record, decoded into the flat codes of ``shape`` (vectorised, one allocation)."""
    rows = shape[0]
    numel = math.prod(shape)
    cols = numel // rows
    n, nrows, pbits = r.fmt("IIB", where)
    want_rows, width = (rows, cols) if enc == ENC_CSR else (cols, rows)
    # The writer bridges every zero run (the one after a row's last entry included) with filler entries, so a
    # row of k entries spans fewer than (k + 1) * 2**index_bits weights: a record of n entries justifies at most
    # (n + rows) * 2**index_bits weights.
    if nrows != want_rows or not 1 <= pbits <= 32 or n > numel or numel > (n + nrows) << index_bits:
        raise PackFormatError(f"{where}: sparse header ({n} entries, {nrows} rows) inconsistent with shape {shape}")
    counts = unpack_uint(r.take(packed_nbytes(nrows, pbits), f"{where} pointers"), nrows, pbits)
    if int(counts.sum()) != n:
        raise PackFormatError(f"{where}: row counts sum to {int(counts.sum())}, record says {n}")
    vals = _read_stream(r, n, bits, is_signed, f"{where} values")
    gaps = _read_stream(r, n, index_bits, False, f"{where} indices")
    if n == 0:
        return np.zeros(numel, dtype=np.int64)
    # Positions computed in place in one n-long array (the file is untrusted: few temporaries).
    row_of = np.repeat(np.arange(nrows, dtype=np.int64), counts)
    pos = np.cumsum(gaps + 1)                                 # 1 + absolute position, counted from entry 0
    del gaps
    row_start = np.cumsum(counts) - counts                    # first entry of each row
    pos -= np.where(row_start > 0, pos[np.maximum(row_start - 1, 0)], 0)[row_of]
    pos -= 1                                                  # position inside the row
    if int(pos.max()) >= width:
        raise PackFormatError(f"{where}: relative indices run past the row ({int(pos.max()) + 1} > {width})")
    if enc == ENC_CSR:                                        # flat index: row * cols + pos
        row_of *= cols
    else:                                                     # CSC: pos is the row, row_of the column
        pos *= cols
    pos += row_of
    del row_of
    codes = np.zeros(numel, dtype=np.int64)
    codes[pos] = vals
    return codes


# ---------------------------------------------------------------- whole files
def pack_model(model: nn.Module, *, conv_index_bits: int = 8, fc_index_bits: int = 5) -> tuple[bytes, dict[str, Any]]:
    """Serialise a sequential (possibly pruned and quantized) model; returns the bytes and the accounting:
    ``{"layers": {name: {part: bits}}, "total_bits": {part: bits}, "bytes": n, "formats": {name: encoding}}``."""
    ops, folded = fold_batchnorm(model, extract_ops(model))
    for op in ops:
        try:
            _check_op(op)
        except ValueError as exc:
            raise StageError(f"the model cannot be packed: {exc}") from exc
    w = _Writer()
    arch = json.dumps([op.to_json() for op in ops], separators=(",", ":")).encode("utf-8")
    layers = [op for op in ops if op.kind in ("conv", "linear")]
    w.put(MAGIC, "header")
    w.fmt("HHII", FORMAT_VERSION, 0, len(layers), len(arch))
    w.put(arch, "header")
    per_layer: dict[str, dict[str, int]] = {}
    formats: dict[str, str] = {}
    for op in layers:
        m = model.get_submodule(op.name)
        wt, bs = folded.get(op.name, (None, None))
        lc = layer_codes(op.name, m, wt, bs)
        if op.kind == "conv":
            lc.conv = {"stride": op.param("stride"), "padding": op.param("padding"), "dilation": op.param("dilation")}
        _check_writable(lc)
        before = dict(w.tags)
        formats[op.name] = ENC_NAMES[_write_layer(w, lc, conv_index_bits if op.kind == "conv" else fc_index_bits)]
        per_layer[op.name] = {k: 8 * (w.tags[k] - before.get(k, 0)) for k in w.tags}
    body = bytes(w.buf)
    crc = struct.pack("<I", zlib.crc32(body))
    total = {k: 8 * v for k, v in w.tags.items()}
    total["header"] = total.get("header", 0) + 32
    return body + crc, {"layers": per_layer, "total_bits": total, "bytes": len(body) + 4, "formats": formats}


_OP_PARAMS = {"conv": ("stride", "padding", "dilation"), "linear": (), "relu": (), "flatten": (),
              "maxpool": ("kernel", "stride", "padding"), "avgpool": ("kernel", "stride", "padding")}


def _check_op(op: Op) -> None:
    """Every op kind known, exactly its parameters, each a pair of small non-negative ints (hostile input)."""
    if op.kind not in _OP_PARAMS:
        raise ValueError(f"unknown op kind {op.kind!r}")
    params = dict(op.params)
    if set(params) != set(_OP_PARAMS[op.kind]) or len(params) != len(op.params):
        raise ValueError(f"op {op.kind!r} has parameters {sorted(params)}, needs {list(_OP_PARAMS[op.kind])}")
    if (op.kind in ("conv", "linear")) != bool(op.name):
        raise ValueError(f"op {op.kind!r} has name {op.name!r} (conv / linear need one, other ops none)")
    for key, v in params.items():
        if (not isinstance(v, tuple) or len(v) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)):
            raise ValueError(f"op {op.kind!r} parameter {key!r} = {repr(v)[:60]} is not a pair of integers in [0, 255]")
        if key in ("kernel", "stride", "dilation") and min(v) < 1:
            raise ValueError(f"op {op.kind!r} parameter {key!r} = {v!r} must be positive")
    if op.kind in ("maxpool", "avgpool"):
        k, pad = params["kernel"], params["padding"]
        if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:
            raise ValueError(f"op {op.kind!r}: padding {pad} exceeds half the kernel {k}")


def _read_arch(raw: bytes, n_layers: int) -> list[Op]:
    """The op list of the header, validated before any layer record is read."""
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, list) or not 1 <= len(doc) <= MAX_OPS:
            raise ValueError(f"a list of 1 to {MAX_OPS} ops is needed, got {type(doc).__name__}"
                             + (f" of {len(doc)}" if isinstance(doc, list) else ""))
        ops = [Op.from_json(d) for d in doc]
        for op in ops:
            _check_op(op)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PackFormatError(f"architecture is malformed: {exc}") from exc
    names = [op.name for op in ops if op.kind in ("conv", "linear")]
    if len(names) != n_layers:
        raise PackFormatError(f"architecture has {len(names)} conv / linear ops, header says {n_layers} layers")
    if len(set(names)) != len(names):
        dup = sorted(n for n, c in Counter(names).items() if c > 1)
        raise PackFormatError(f"architecture names layers {dup} more than once")
    return ops


def _check_chain(ops: list[Op], layers: dict[str, LayerCodes]) -> None:
    """The ops fit together: channel counts chain, no conv / pooling after a flatten, linear input features
    match (the spatial size is not in the file; torch checks it against the input when the model runs)."""
    rank = "any"                   # any (unknown), img (N, C, H, W), flat (N, F)
    chans: int | None = None       # channels of an img
    last: int | None = None        # size of the last axis, when known
    mult: int | None = None        # a flattened img of `mult` channels: features are a multiple of it
    for i, op in enumerate(ops):
        where = f"op {i} ({op.kind} {op.name!r})" if op.name else f"op {i} ({op.kind})"
        if op.kind == "conv":
            out_c, in_c = layers[op.name].shape[:2]
            if rank == "flat":
                raise PackFormatError(f"{where}: a conv cannot follow a flatten")
            if chans is not None and chans != in_c:
                raise PackFormatError(f"{where}: takes {in_c} channels, the layer before gives {chans}")
            rank, chans, last = "img", out_c, None
        elif op.kind == "linear":
            out_f, in_f = layers[op.name].shape
            if last is not None and last != in_f:
                raise PackFormatError(f"{where}: takes {in_f} features, the layer before gives {last}")
            if mult is not None and in_f % mult:
                raise PackFormatError(f"{where}: {in_f} input features are not a multiple of the {mult} channels "
                                      "flattened before it")
            last, mult = out_f, None
        elif op.kind in ("maxpool", "avgpool"):
            if rank == "flat":
                raise PackFormatError(f"{where}: 2-d pooling cannot follow a flatten")
            last = None
        elif op.kind == "flatten":
            if rank == "img":
                mult, last = chans, None
            elif rank == "any":
                last = None
            rank, chans = "flat", None


def read_packed(data: bytes) -> tuple[list[Op], list[LayerCodes]]:
    """Parse and validate a packed file (hostile input safe: any defect raises ``PackFormatError``)."""
    if len(data) < len(MAGIC) + 16 + 4:
        raise PackFormatError(f"file too short ({len(data)} bytes) to be a packed model")
    if data[:4] != MAGIC:
        raise PackFormatError("not a crosslayer packed model (bad magic)")
    r = _Reader(data[:-4])
    r.take(4, "magic")
    version, flags, n_layers, arch_len = r.fmt("HHII", "header")
    if version != FORMAT_VERSION:
        raise PackFormatError(f"packed format version {version} is not supported (this reader: {FORMAT_VERSION})")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise PackFormatError("checksum mismatch: the file is corrupted")
    if flags != 0:
        raise PackFormatError(f"header flags {flags:#x} are not supported (version {FORMAT_VERSION} has none)")
    if n_layers == 0 or n_layers > MAX_LAYERS or arch_len > MAX_ARCH:
        raise PackFormatError(f"header claims {n_layers} layers / {arch_len}-byte architecture")
    ops = _read_arch(r.take(arch_len, "architecture"), n_layers)
    layers: list[LayerCodes] = []
    budget = MAX_TOTAL_NUMEL
    for i, op in enumerate(op for op in ops if op.kind in ("conv", "linear")):
        layers.append(_read_layer(r, i, op, budget))
        budget -= layers[-1].codes.size
    if r.remaining():
        raise PackFormatError(f"{r.remaining()} unexpected bytes after the last layer")
    _check_chain(ops, {lc.name: lc for lc in layers})
    return ops, layers


def _module(lc: LayerCodes) -> nn.Module:
    codes = torch.from_numpy(lc.codes.reshape(lc.shape))
    if lc.is_float:
        weight = torch.from_numpy(lc.codes.astype(np.uint32).view(np.float32).reshape(lc.shape).copy())
        wspec = None
    else:
        per_ch = lc.scale.size > 1
        wspec = FixedPointSpec(bits=lc.bits, signed=lc.signed, symmetric=bool((lc.zero_point == 0).all()),
                               per_channel=per_ch)
        bshape = [-1] + [1] * (len(lc.shape) - 1)
        scale = torch.from_numpy(lc.scale).reshape(bshape if per_ch else [1] * len(lc.shape))
        zp = torch.from_numpy(lc.zero_point).reshape(scale.shape)
        weight = (codes.float() - zp) * scale
    aspec = None
    if lc.act is not None:
        aspec = FixedPointSpec(bits=lc.act["bits"], signed=lc.act["signed"], symmetric=lc.act["symmetric"])
    has_bias = lc.bias is not None
    m: QuantLinear | QuantConv2d
    if lc.kind == "linear":
        m = QuantLinear(lc.shape[1], lc.shape[0], has_bias, weight_spec=wspec, act_spec=aspec)
    else:
        m = QuantConv2d(lc.shape[1], lc.shape[0], lc.shape[2:], stride=tuple(lc.conv["stride"]),
                        padding=tuple(lc.conv["padding"]), dilation=tuple(lc.conv["dilation"]), bias=has_bias,
                        weight_spec=wspec, act_spec=aspec)
    with torch.no_grad():
        m.weight.copy_(weight)
        if has_bias:
            m.get_parameter("bias").copy_(torch.from_numpy(np.asarray(lc.bias)))
    if lc.act is not None:
        m.get_buffer("act_lo").fill_(lc.act["lo"])
        m.get_buffer("act_hi").fill_(lc.act["hi"])
    return m.eval()


def unpack_model(data: bytes) -> nn.Sequential:
    """Rebuild a runnable PyTorch model from packed bytes."""
    ops, layers = read_packed(data)
    return build_sequential(ops, {lc.name: _module(lc) for lc in layers}).eval()


def write_packed(path: str | Path, model: nn.Module, **kwargs: Any) -> dict[str, Any]:
    data, acct = pack_model(model, **kwargs)
    atomic_write_bytes(path, data)
    return acct

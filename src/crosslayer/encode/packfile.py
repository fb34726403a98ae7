"""The packed model file (``.xlm``): a versioned, checksummed, byte-exact container of a compressed model.

Layout (little-endian)::

    magic b"XLM\\x00" | version u16 | flags u16 | n_layers u32 | arch_len u32 | arch JSON (op list)
    n_layers × layer record (name, shape, quantization, bias, encoding, pointer / value / index streams)
    crc32 u32 of everything before it

Each layer stores its weight codes in the smallest of: dense fixed-width, relative-index CSR or CSC
(Deep Compression, Han et al., ICLR 2016) or a bitmask, each stream (values, indices) fixed-width or
Huffman coded, whichever is smaller. Every byte written is tagged (header / values / indices / codebook /
pointers / bias) so :func:`accounting` is exact and the file's size equals its sum.

The reader treats the file as hostile: every length is checked against the bytes that remain before
anything is allocated, tensor sizes are capped by what the encoded entries can justify, and the
checksum and version are verified first. Any defect raises ``PackFormatError``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crosslayer.encode import huffman
from crosslayer.encode.bits import pack_uint, packed_nbytes, unpack_uint
from crosslayer.encode.graph import Op, build_sequential, extract_ops, fold_batchnorm
from crosslayer.encode.sparse import decode_relative, encode_bitmask, encode_csr
from crosslayer.errors import CrossLayerError
from crosslayer.fileio import atomic_write_bytes
from crosslayer.quant.fixed_point import FixedPointSpec, quantize_tensor
from crosslayer.quant.layers import QuantConv2d, QuantLayer, QuantLinear

__all__ = ["FORMAT_VERSION", "LayerCodes", "PackFormatError", "layer_codes", "pack_model",
           "read_packed", "unpack_model", "write_packed"]

MAGIC = b"XLM\x00"
FORMAT_VERSION = 1
MAX_LAYERS = 4096
MAX_NUMEL = 1 << 24
MAX_NAME = 1024
MAX_ARCH = 1 << 20
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
    return {ENC_CSR: encode_csr(mat, index_bits), ENC_CSC: encode_csr(mat, index_bits, transposed=True),
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


def _write_layer(w: _Writer, lc: LayerCodes, index_bits: int) -> None:
    name = lc.name.encode("utf-8")
    w.fmt("H", len(name))
    w.put(name, "header")
    w.fmt("BB", 0 if lc.kind == "conv" else 1, len(lc.shape))
    w.fmt(f"{len(lc.shape)}I", *lc.shape)
    w.fmt("BB", lc.bits, int(lc.signed))
    w.fmt("I", lc.scale.size)
    w.put(lc.scale.astype("<f4").tobytes() + lc.zero_point.astype("<f4").tobytes(), "header")
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


def _read_layer(r: _Reader, i: int) -> LayerCodes:
    where = f"layer {i}"
    (nlen,) = r.fmt("H", where)
    if nlen > MAX_NAME:
        raise PackFormatError(f"{where}: name of {nlen} bytes")
    try:
        name = r.take(nlen, where).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackFormatError(f"{where}: name is not UTF-8") from exc
    where = f"layer {name!r}"
    kind_id, ndim = r.fmt("BB", where)
    if kind_id not in (0, 1) or ndim not in ((4,) if kind_id == 0 else (2,)):
        raise PackFormatError(f"{where}: bad kind {kind_id} / rank {ndim}")
    shape = tuple(int(d) for d in r.fmt(f"{ndim}I", where))
    numel = int(np.prod(shape, dtype=np.int64))
    if numel == 0 or numel > MAX_NUMEL:
        raise PackFormatError(f"{where}: shape {shape} out of bounds")
    bits, signed = r.fmt("BB", where)
    if not (1 <= bits <= 16 or bits == 32) or signed > 1:
        raise PackFormatError(f"{where}: bad bit width {bits}")
    (nscale,) = r.fmt("I", where)
    if nscale not in (1, shape[0]):
        raise PackFormatError(f"{where}: {nscale} scales for {shape[0]} channels")
    scale = np.frombuffer(r.take(4 * nscale, where), dtype="<f4").astype(np.float32)
    zp = np.frombuffer(r.take(4 * nscale, where), dtype="<f4").astype(np.float32)
    geo = r.fmt("6B", where)
    conv = {"stride": geo[0:2], "padding": geo[2:4], "dilation": geo[4:6]}
    (abits,) = r.fmt("B", where)
    act = None
    if abits:
        a_signed, a_sym, lo, hi = r.fmt("BBff", where)
        if abits > 16 or not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise PackFormatError(f"{where}: bad activation quantization")
        act = {"bits": abits, "signed": bool(a_signed), "symmetric": bool(a_sym), "lo": lo, "hi": hi}
    (has_bias,) = r.fmt("B", where)
    bias = None
    if has_bias:
        (nb,) = r.fmt("I", where)
        if nb != shape[0]:
            raise PackFormatError(f"{where}: bias of {nb} values for {shape[0]} outputs")
        bias = np.frombuffer(r.take(4 * nb, where), dtype="<f4").astype(np.float32)
    enc, index_bits = r.fmt("BB", where)
    if enc not in ENC_NAMES or not 1 <= index_bits <= 16:
        raise PackFormatError(f"{where}: unknown encoding {enc} / index bits {index_bits}")
    rows, cols = shape[0], numel // shape[0]
    is_signed = bool(signed) and bits != 32
    if enc == ENC_DENSE:
        (n,) = r.fmt("I", where)
        if n != numel:
            raise PackFormatError(f"{where}: dense record with {n} values for {numel} weights")
        codes = _read_stream(r, n, bits, is_signed, f"{where} values")
    elif enc == ENC_BITMASK:
        (n,) = r.fmt("I", where)
        mask = unpack_uint(r.take(packed_nbytes(numel, 1), f"{where} mask"), numel, 1).astype(bool)
        if int(mask.sum()) != n:
            raise PackFormatError(f"{where}: bitmask holds {int(mask.sum())} entries, record says {n}")
        codes = np.zeros(numel, dtype=np.int64)
        codes[mask] = _read_stream(r, n, bits, is_signed, f"{where} values")
    else:
        n, nrows, pbits = r.fmt("IIB", where)
        want_rows = rows if enc == ENC_CSR else cols
        # Every entry (real or filler) covers at most 2**index_bits positions, so a record of n entries
        # justifies at most n * 2**index_bits weights (+ one span per row for trailing zeros).
        if nrows != want_rows or not 1 <= pbits <= 32 or n > numel or numel > (n + nrows) << index_bits:
            raise PackFormatError(f"{where}: sparse header inconsistent with shape {shape}")
        counts = unpack_uint(r.take(packed_nbytes(nrows, pbits), f"{where} pointers"), nrows, pbits)
        if int(counts.sum()) != n:
            raise PackFormatError(f"{where}: row counts sum to {int(counts.sum())}, record says {n}")
        vals = _read_stream(r, n, bits, is_signed, f"{where} values")
        gaps = _read_stream(r, n, index_bits, False, f"{where} indices")
        width = cols if enc == ENC_CSR else rows
        mat = np.zeros((nrows, width), dtype=np.int64)
        start = 0
        try:
            for k, c in enumerate(counts.tolist()):
                mat[k] = decode_relative(vals[start:start + c], gaps[start:start + c], width)
                start += c
        except CrossLayerError as exc:
            raise PackFormatError(f"{where}: {exc}") from exc
        codes = (mat if enc == ENC_CSR else mat.T).ravel()
    if not is_signed and bits != 32 and (codes < 0).any():
        raise PackFormatError(f"{where}: negative code in an unsigned layer")
    return LayerCodes(name, "conv" if kind_id == 0 else "linear", shape, codes, bits, bool(signed), scale, zp,
                      bias, act, conv)


# ---------------------------------------------------------------- whole files
def pack_model(model: nn.Module, *, conv_index_bits: int = 8, fc_index_bits: int = 5) -> tuple[bytes, dict[str, Any]]:
    """Serialise a sequential (possibly pruned and quantized) model; returns the bytes and the accounting."""
    ops, folded = fold_batchnorm(model, extract_ops(model))
    w = _Writer()
    arch = json.dumps([op.to_json() for op in ops], separators=(",", ":")).encode("utf-8")
    layers = [op for op in ops if op.kind in ("conv", "linear")]
    w.put(MAGIC, "header")
    w.fmt("HHII", FORMAT_VERSION, 0, len(layers), len(arch))
    w.put(arch, "header")
    per_layer: dict[str, dict[str, int]] = {}
    for op in layers:
        m = model.get_submodule(op.name)
        wt, bs = folded.get(op.name, (None, None))
        lc = layer_codes(op.name, m, wt, bs)
        if op.kind == "conv":
            lc.conv = {"stride": op.param("stride"), "padding": op.param("padding"), "dilation": op.param("dilation")}
        before = dict(w.tags)
        _write_layer(w, lc, conv_index_bits if op.kind == "conv" else fc_index_bits)
        per_layer[op.name] = {k: 8 * (w.tags[k] - before.get(k, 0)) for k in w.tags}
    body = bytes(w.buf)
    crc = struct.pack("<I", zlib.crc32(body))
    total = {k: 8 * v for k, v in w.tags.items()}
    total["header"] = total.get("header", 0) + 32
    return body + crc, {"layers": per_layer, "total_bits": total, "bytes": len(body) + 4}


_OP_PARAMS = {"conv": ("stride", "padding", "dilation"), "linear": (), "relu": (), "flatten": (),
              "maxpool": ("kernel", "stride", "padding"), "avgpool": ("kernel", "stride", "padding")}


def _check_op(op: Op) -> None:
    """Every op kind known and every parameter a pair of small non-negative ints (hostile input)."""
    if op.kind not in _OP_PARAMS:
        raise ValueError(f"unknown op kind {op.kind!r}")
    params = dict(op.params)
    for key in _OP_PARAMS[op.kind]:
        v = params[key]
        if (not isinstance(v, tuple) or len(v) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 1024 for x in v)):
            raise ValueError(f"op {op.kind!r} parameter {key!r} = {v!r} is not a pair of small integers")
        if key in ("kernel", "stride", "dilation") and min(v) < 1:
            raise ValueError(f"op {op.kind!r} parameter {key!r} must be positive")


def read_packed(data: bytes) -> tuple[list[Op], list[LayerCodes]]:
    """Parse and validate a packed file (hostile input safe)."""
    if len(data) < len(MAGIC) + 16 + 4:
        raise PackFormatError(f"file too short ({len(data)} bytes) to be a packed model")
    if data[:4] != MAGIC:
        raise PackFormatError("not a crosslayer packed model (bad magic)")
    r = _Reader(data[:-4])
    r.take(4, "magic")
    version, _flags, n_layers, arch_len = r.fmt("HHII", "header")
    if version != FORMAT_VERSION:
        raise PackFormatError(f"packed format version {version} is not supported (this reader: {FORMAT_VERSION})")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise PackFormatError("checksum mismatch: the file is corrupted")
    if n_layers == 0 or n_layers > MAX_LAYERS or arch_len > MAX_ARCH:
        raise PackFormatError(f"header claims {n_layers} layers / {arch_len}-byte architecture")
    try:
        ops = [Op.from_json(d) for d in json.loads(r.take(arch_len, "architecture").decode("utf-8"))]
        for op in ops:
            _check_op(op)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PackFormatError(f"architecture is malformed: {exc}") from exc
    layers = [_read_layer(r, i) for i in range(n_layers)]
    if r.remaining():
        raise PackFormatError(f"{r.remaining()} unexpected bytes after the last layer")
    names = [op.name for op in ops if op.kind in ("conv", "linear")]
    if names != [lc.name for lc in layers]:
        raise PackFormatError("architecture and layer records disagree")
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

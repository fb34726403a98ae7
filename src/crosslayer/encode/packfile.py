"""The packed model file (``.xlm``): a versioned, checksummed, byte-exact container of a compressed model.

Layout (little-endian)::

    magic b"XLM\\x00" | version u16 | flags u16 | n_weights u32 | n_tensors u32 | graph_len u32 | meta_len u32
    graph: an ONNX ModelProto with its weight initializers stripped (see crosslayer.encode.onnx_graph)
    meta: JSON {"refs": {initializer: [kind, source]}, "record": architecture record, "input": [C, H, W]}
    n_weights × weight record (name, shape, quantization, encoding, pointer / value / index streams)
    n_tensors × tensor record (name, dtype, shape, raw little-endian data): biases, norms, buffers, ...
    crc32 u32 of everything before it

A weight record holds one matrix-product weight (a conv's 4-d or a linear / attention projection's 2-d
tensor, named by its state-dict key) as integer codes (a quantized layer: its exact codes, 2-16 bits, with
per-tensor or per-channel float32 scales, then float32 zero points only when some are non-zero, bit 31 of
the scale count saying so) or float32 bit patterns. The codes go in the smallest of: dense fixed-width,
relative-index CSR or CSC (Deep Compression, Han et al., ICLR 2016) or a bitmask, each stream (values,
indices) fixed-width or Huffman coded, whichever is smaller. Every byte written is tagged (header / graph /
values / indices / codebook / pointers / bias / tensors) so the accounting is exact and the file's size
equals its sum.

The reader treats the file as hostile; any defect raises ``PackFormatError``, nothing else:

- magic, version, checksum and flags first; every length is checked against the bytes that remain before
  anything is allocated;
- each weight record: a unique name, rank 4 (conv) or 2 (matrix), 2-16-bit codes or float32, finite positive
  scales, finite zero points and float weights; each tensor record: a unique name, a known dtype, at most 8
  dimensions, no NaN;
- sizes: at most ``MAX_NUMEL`` values a record and ``MAX_TOTAL_NUMEL`` a file, and never more than the encoded
  entries justify (a dense or bitmask record pays at least a bit a weight; a CSR / CSC record of n entries
  spans at most ``(n + rows) * 2**index_bits`` weights, since the writer bridges every zero run, trailing
  ones included, with filler entries);
- the graph (``crosslayer.encode.onnx_graph.validate_graph``): bounded, standard operators only, no external
  data, every reference naming a stored record of a fitting kind, and valid ONNX once restored.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from crosslayer.encode import huffman
from crosslayer.encode.bits import pack_uint, packed_nbytes, unpack_bits, unpack_uint
from crosslayer.encode.onnx_graph import GraphError, restore_initializers, validate_graph
from crosslayer.encode.sparse import encode_bitmask, encode_csr
from crosslayer.errors import CrossLayerError, StageError

__all__ = ["FORMAT_VERSION", "MAX_FILE_BYTES", "LayerCodes", "PackFormatError", "Packed", "read_packed",
           "write_container"]

MAGIC = b"XLM\x00"
FORMAT_VERSION = 3                  # 3: an ONNX graph (initializers stripped) and raw tensor records
ZP_STORED = 1 << 31                 # flag in a record's scale count: float32 zero points follow the scales
MAX_LAYERS = 4096
MAX_TENSORS = 1 << 16
MAX_NUMEL = 1 << 24
MAX_NAME = 1024
MAX_META = 1 << 20
MAX_TOTAL_NUMEL = 1 << 26
MAX_GRAPH = 16 << 20
MAX_FILE_BYTES = 4 * MAX_TOTAL_NUMEL + MAX_GRAPH + MAX_META + (1 << 20)
"""No legal file is larger: at most 32 bits per value plus the graph and tables; read no more."""
ENC_DENSE, ENC_CSR, ENC_CSC, ENC_BITMASK = 0, 1, 2, 3
ENC_NAMES = {ENC_DENSE: "dense", ENC_CSR: "csr", ENC_CSC: "csc", ENC_BITMASK: "bitmask"}
DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<f4"), 1: np.dtype("<i8"), 2: np.dtype("<i4"), 3: np.dtype("bool"), 4: np.dtype("<f2"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 7: np.dtype("u1")}
DTYPE_IDS = {np.dtype(v).str: k for k, v in DTYPES.items()}
REF_KINDS = ("weight", "codes", "codes_t", "tensor")


class PackFormatError(CrossLayerError):
    """A packed model file that is truncated, corrupted, of another version, or claims more than it holds."""


@dataclass
class LayerCodes:
    """What a weight record holds: integer codes (or float32 bit patterns) and their quantization."""

    name: str
    kind: str                       # conv (rank 4) or linear (rank 2: linear and attention projections)
    shape: tuple[int, ...]
    codes: np.ndarray               # int64, weight codes (float layers: float32 bits as int)
    bits: int                       # 2-16 for codes, 32 for float
    signed: bool
    scale: np.ndarray               # float32, 1 or out_channels values (unused for float)
    zero_point: np.ndarray          # float32, same length

    @property
    def is_float(self) -> bool:
        return self.bits == 32

    def values(self) -> np.ndarray:
        """The float32 weights: the bit patterns, or ``(codes - zero_point) * scale``."""
        if self.is_float:
            return self.codes.astype(np.uint32).view(np.float32).reshape(self.shape).copy()
        per = (-1,) + (1,) * (len(self.shape) - 1) if self.scale.size > 1 else (1,) * len(self.shape)
        codes = self.codes.reshape(self.shape).astype(np.float32)
        return ((codes - self.zero_point.reshape(per)) * self.scale.reshape(per)).astype(np.float32)


@dataclass
class Packed:
    """A parsed and validated packed file: the complete ONNX model, the weight records, the other tensors and
    the metadata (``refs``, ``record``, ``input``)."""

    graph: onnx.ModelProto
    layers: list[LayerCodes]
    tensors: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


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
    """Refuse what the reader would reject: 1-bit codes (binary weights) and non-finite numbers."""
    if not (2 <= lc.bits <= 16 or lc.bits == 32):
        raise StageError(f"weight {lc.name!r}: only 2-16-bit codes (or float32 weights) can be packed, got "
                         f"{lc.bits}-bit weights")
    arr = lc.codes.astype(np.uint32).view(np.float32) if lc.is_float else np.concatenate([lc.scale, lc.zero_point])
    if not np.isfinite(arr).all():
        raise StageError(f"weight {lc.name!r} has a non-finite {'value' if lc.is_float else 'scale / zero point'} "
                         "and cannot be packed")


def _name(w: _Writer, name: str) -> None:
    raw = name.encode("utf-8")
    if len(raw) > MAX_NAME:
        raise StageError(f"name {name[:60]!r}... is longer than {MAX_NAME} bytes")
    w.fmt("H", len(raw))
    w.put(raw, "header")


def write_layer(w: _Writer, lc: LayerCodes, index_bits: int) -> int:
    """Append one weight record; returns the weight encoding it chose (``ENC_*``)."""
    _check_writable(lc)
    _name(w, lc.name)
    w.fmt("BB", 0 if lc.kind == "conv" else 1, len(lc.shape))
    w.fmt(f"{len(lc.shape)}I", *lc.shape)
    w.fmt("BB", lc.bits, int(lc.signed))
    has_zp = bool((lc.zero_point != 0).any())  # symmetric quantization: all zero, so not stored
    w.fmt("I", lc.scale.size | (ZP_STORED if has_zp else 0))
    w.put(lc.scale.astype("<f4").tobytes() + (lc.zero_point.astype("<f4").tobytes() if has_zp else b""), "header")
    best = _best_weights(lc, index_bits)
    w.buf += best.buf
    for tag, n in best.tags.items():
        w.tags[tag] += n
    return int(best.buf[0])


def write_tensor(w: _Writer, name: str, arr: np.ndarray) -> None:
    """Append one tensor record (dtype, shape, raw data); biases are tagged ``bias``, the rest ``tensors``."""
    a = np.ascontiguousarray(arr)
    code = DTYPE_IDS.get(a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str)
    if code is None or a.ndim > 8:
        raise StageError(f"tensor {name!r} of dtype {a.dtype} and rank {a.ndim} cannot be packed")
    _name(w, name)
    w.fmt("BB", code, a.ndim)
    w.fmt(f"{a.ndim}I", *a.shape)
    w.put(a.astype(DTYPES[code]).tobytes(), "bias" if name.endswith("bias") else "tensors")


def _finite(arr: np.ndarray, where: str, what: str) -> None:
    if not np.isfinite(arr).all():
        raise PackFormatError(f"{where}: non-finite {what}")


def _read_name(r: _Reader, where: str, seen: set[str]) -> str:
    (nlen,) = r.fmt("H", where)
    if nlen > MAX_NAME:
        raise PackFormatError(f"{where}: name of {nlen} bytes")
    try:
        name = r.take(nlen, where).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackFormatError(f"{where}: name is not UTF-8") from exc
    if name in seen:
        raise PackFormatError(f"{where}: name {name!r} is stored more than once")
    seen.add(name)
    return name


def _read_layer(r: _Reader, i: int, budget: int, seen: set[str]) -> LayerCodes:
    """One weight record; ``budget`` is the number of values still allowed."""
    name = _read_name(r, f"weight record {i}", seen)
    where = f"weight {name!r}"
    kind_id, ndim = r.fmt("BB", where)
    if kind_id not in (0, 1) or ndim != (4 if kind_id == 0 else 2):
        raise PackFormatError(f"{where}: bad kind {kind_id} / rank {ndim}")
    kind = "conv" if kind_id == 0 else "linear"
    shape = tuple(int(d) for d in r.fmt(f"{ndim}I", where))
    numel = math.prod(shape)  # Python ints: four u32 dimensions can overflow int64
    if numel == 0 or numel > MAX_NUMEL:
        raise PackFormatError(f"{where}: shape {shape} out of bounds (1 to {MAX_NUMEL} weights)")
    if numel > budget:
        raise PackFormatError(f"{where}: shape {shape} takes the model past {MAX_TOTAL_NUMEL} values")
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
    return LayerCodes(name, kind, shape, codes, bits, bool(signed), scale, zp)


def _read_tensor(r: _Reader, i: int, budget: int, seen: set[str]) -> tuple[str, np.ndarray]:
    name = _read_name(r, f"tensor record {i}", seen)
    where = f"tensor {name!r}"
    code, ndim = r.fmt("BB", where)
    if code not in DTYPES or ndim > 8:
        raise PackFormatError(f"{where}: unknown dtype {code} / rank {ndim}")
    shape = tuple(int(d) for d in r.fmt(f"{ndim}I", where))
    numel = math.prod(shape)
    if numel > min(budget, MAX_NUMEL):
        raise PackFormatError(f"{where}: shape {shape} out of bounds")
    dt = DTYPES[code]
    arr = np.frombuffer(r.take(numel * dt.itemsize, where), dtype=dt).reshape(shape).copy()
    if dt.kind == "f" and np.isnan(arr).any():
        raise PackFormatError(f"{where}: NaN values")
    return name, arr


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
def write_container(graph: bytes, meta: dict[str, Any], layers: list[tuple[LayerCodes, int]],
                    tensors: dict[str, np.ndarray]) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its accounting: ``{"layers": {name: {part: bits}}, "total_bits": {part: bits},
    "bytes": n, "formats": {name: encoding}}``. ``layers`` pairs each record with its relative-index width."""
    raw_meta = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8")
    if len(graph) > MAX_GRAPH or len(raw_meta) > MAX_META or len(layers) > MAX_LAYERS or len(tensors) > MAX_TENSORS:
        raise StageError(f"the model is too large to pack: graph {len(graph)} bytes, meta {len(raw_meta)} bytes, "
                         f"{len(layers)} weights, {len(tensors)} tensors")
    w = _Writer()
    w.put(MAGIC, "header")
    w.fmt("HHIIII", FORMAT_VERSION, 0, len(layers), len(tensors), len(graph), len(raw_meta))
    w.put(graph, "graph")
    w.put(raw_meta, "header")
    per_layer: dict[str, dict[str, int]] = {}
    formats: dict[str, str] = {}
    for lc, index_bits in layers:
        before = dict(w.tags)
        formats[lc.name] = ENC_NAMES[write_layer(w, lc, index_bits)]
        per_layer[lc.name] = {k: 8 * (w.tags[k] - before.get(k, 0)) for k in w.tags if w.tags[k] != before.get(k, 0)}
    for name, arr in tensors.items():
        write_tensor(w, name, arr)
    body = bytes(w.buf)
    total = {k: 8 * v for k, v in w.tags.items()}
    total["header"] = total.get("header", 0) + 32
    return body + struct.pack("<I", zlib.crc32(body)), {"layers": per_layer, "total_bits": total,
                                                        "bytes": len(body) + 4, "formats": formats}


def _meta(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PackFormatError(f"metadata is malformed: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("refs", {}), dict) \
            or not isinstance(meta.get("record", {}), dict):
        raise PackFormatError("metadata must be an object with a 'refs' object and a 'record' object")
    return meta


def _resolve(refs: dict[str, Any], layers: dict[str, LayerCodes], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The arrays the graph's stripped initializers refer to (``PackFormatError`` on a dangling reference)."""
    out: dict[str, np.ndarray] = {}
    for init, ref in refs.items():
        if (not isinstance(ref, list) or len(ref) != 2 or ref[0] not in REF_KINDS or not isinstance(ref[1], str)
                or not isinstance(init, str)):
            raise PackFormatError(f"reference of initializer {str(init)[:60]!r} is malformed: {str(ref)[:60]}")
        kind, src = ref
        if kind == "tensor":
            if src not in tensors:
                raise PackFormatError(f"initializer {init!r} refers to tensor {src!r}, which the file does not hold")
            out[init] = tensors[src]
            continue
        lc = layers.get(src)
        if lc is None:
            raise PackFormatError(f"initializer {init!r} refers to weight {src!r}, which the file does not hold")
        if kind == "weight":
            out[init] = lc.values()
        elif kind == "codes_t" and len(lc.shape) != 2:
            raise PackFormatError(f"initializer {init!r} wants transposed codes of the {len(lc.shape)}-d "
                                  f"weight {src!r}")
        elif lc.is_float or lc.bits > 8 or not lc.signed or (lc.zero_point != 0).any():
            raise PackFormatError(f"initializer {init!r} wants int8 codes of {src!r}, which holds {lc.bits}-bit "
                                  "codes that are not signed and symmetric")
        else:
            codes = lc.codes.reshape(lc.shape).astype(np.int8)
            out[init] = np.ascontiguousarray(codes.T) if kind == "codes_t" else codes
    return out


def read_packed(data: bytes) -> Packed:
    """Parse and validate a packed file (hostile input safe: any defect raises ``PackFormatError``)."""
    if len(data) < len(MAGIC) + 20 + 4:
        raise PackFormatError(f"file too short ({len(data)} bytes) to be a packed model")
    if data[:4] != MAGIC:
        raise PackFormatError("not a crosslayer packed model (bad magic)")
    r = _Reader(data[:-4])
    r.take(4, "magic")
    (version,) = r.fmt("H", "header")
    if version != FORMAT_VERSION:
        raise PackFormatError(f"packed format version {version} is not supported (this reader: {FORMAT_VERSION}; "
                              "pack the model again)")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise PackFormatError("checksum mismatch: the file is corrupted")
    flags, n_layers, n_tensors, graph_len, meta_len = r.fmt("HIIII", "header")
    if flags != 0:
        raise PackFormatError(f"header flags {flags:#x} are not supported (version {FORMAT_VERSION} has none)")
    if n_layers > MAX_LAYERS or n_tensors > MAX_TENSORS or graph_len > MAX_GRAPH or meta_len > MAX_META:
        raise PackFormatError(f"header claims {n_layers} weights / {n_tensors} tensors / {graph_len}-byte graph / "
                              f"{meta_len}-byte metadata")
    graph_raw = r.take(graph_len, "graph")
    meta = _meta(r.take(meta_len, "metadata"))
    try:
        proto = validate_graph(graph_raw)
    except GraphError as exc:
        raise PackFormatError(str(exc)) from exc
    layers: list[LayerCodes] = []
    tensors: dict[str, np.ndarray] = {}
    budget, seen = MAX_TOTAL_NUMEL, set[str]()
    for i in range(n_layers):
        layers.append(_read_layer(r, i, budget, seen))
        budget -= layers[-1].codes.size
    for i in range(n_tensors):
        name, arr = _read_tensor(r, i, budget, seen)
        tensors[name] = arr
        budget -= arr.size
    if r.remaining():
        raise PackFormatError(f"{r.remaining()} unexpected bytes after the last record")
    arrays = _resolve(meta.get("refs", {}), {lc.name: lc for lc in layers}, tensors)
    try:
        restore_initializers(proto, arrays)
    except GraphError as exc:
        raise PackFormatError(str(exc)) from exc
    return Packed(proto, layers, tensors, meta)

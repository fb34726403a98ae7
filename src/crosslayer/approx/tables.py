"""256x256 truth tables of 8-bit multipliers: the :class:`Multiplier` value type, signed / unsigned
views of a table, and loading / saving tables as ``.npy`` or plain text / CSV.

A table is indexed ``table[w - lo, a - lo]`` with ``lo = -128`` for a *signed* table (two's-complement
operands -128..127) and ``lo = 0`` for an *unsigned* one (operands 0..255); the first operand is the
weight. An unsigned table serves signed operands through the sign-magnitude wrapper
``sign(w) sign(a) T[|w|, |a|]``, the usual way an unsigned approximate core is used in a signed
datapath; a signed table (e.g. an EvoApproxLib ``mul8s`` circuit) serves signed operands directly.

Text forms accepted by :func:`load_table` (``#`` starts a comment; commas and/or blanks separate):
256 lines of 256 products (row = first operand); 65,536 products one per line (row-major); or 65,536
``a b product`` triples covering every operand pair once (what a loop over EvoApproxLib's behavioural
C model prints).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crosslayer.errors import ConfigError, DataError
from crosslayer.fileio import atomic_write_bytes, atomic_write_text

__all__ = ["SIZE", "Multiplier", "load_table", "operand_values", "save_table"]

SIZE = 256
_MAX_ABS = 1 << 17  # |product| of two 8-bit operands is at most 2^16; anything larger is a corrupt table


def operand_values(signed: bool) -> np.ndarray:
    """The 256 operand values a table's rows / columns stand for."""
    return np.arange(-128, 128, dtype=np.int64) if signed else np.arange(0, 256, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Multiplier:
    """An 8-bit multiplier given by its truth table, with a relative power figure (exact = 1.0).

    ``source`` says where ``relative_power`` comes from; ``description`` cites the design.
    """

    name: str
    table: np.ndarray
    signed: bool
    relative_power: float = 1.0
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        _validate(self.table, self.name)
        if not 0.0 < self.relative_power <= 10.0:
            raise ConfigError(f"relative_power of multiplier {self.name!r} = {self.relative_power!r}; "
                              "allowed (0, 10] (exact multiplier = 1)")

    @property
    def lo(self) -> int:
        return -128 if self.signed else 0

    def __call__(self, w: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Approximate products of integer operand arrays (broadcasting like ``w * a``)."""
        w = np.asarray(w, dtype=np.int64)
        a = np.asarray(a, dtype=np.int64)
        if self.signed:
            for nm, v in (("first (weight)", w), ("second (activation)", a)):
                if v.size and (v.min() < -128 or v.max() > 127):
                    raise ConfigError(f"multiplier {self.name!r} has a signed table: {nm} operands must lie in "
                                      f"[-128, 127], got [{int(v.min())}, {int(v.max())}]")
            return self.table[w + 128, a + 128]
        for nm, v in (("first (weight)", w), ("second (activation)", a)):
            if v.size and (np.abs(v).max() > 255):
                raise ConfigError(f"multiplier {self.name!r} is an 8-bit core: {nm} operand magnitudes must be "
                                  f"at most 255, got {int(np.abs(v).max())}")
        sign = np.sign(w) * np.sign(a)
        return sign * self.table[np.abs(w), np.abs(a)]

    def product_table(self, w_range: tuple[int, int], a_range: tuple[int, int]) -> np.ndarray:
        """The products for every weight in ``w_range`` x activation in ``a_range`` (inclusive bounds),
        indexed ``[w - w_lo, a - a_lo]``, int64."""
        w = np.arange(w_range[0], w_range[1] + 1, dtype=np.int64)
        a = np.arange(a_range[0], a_range[1] + 1, dtype=np.int64)
        return self(w[:, None], a[None, :])

    def exact_table(self) -> np.ndarray:
        v = operand_values(self.signed)
        return v[:, None] * v[None, :]


def _validate(table: np.ndarray, name: str) -> None:
    if not isinstance(table, np.ndarray) or table.shape != (SIZE, SIZE):
        shape = getattr(table, "shape", None)
        raise DataError(f"truth table of {name!r} must be a 256x256 array, got shape {shape}")
    if table.dtype != np.int64:
        raise DataError(f"truth table of {name!r} must be int64, got {table.dtype}")
    if np.abs(table).max() > _MAX_ABS:
        raise DataError(f"truth table of {name!r} holds |product| = {int(np.abs(table).max())} > 2^17: "
                        "not an 8x8-bit multiplier")


def _as_int_table(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{where}: values must be numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: holds NaN or infinite values")
        if (arr != np.round(arr)).any():
            raise DataError(f"{where}: products must be integers, found fractional values")
    if arr.size and np.abs(arr.astype(np.float64)).max() > _MAX_ABS:
        raise DataError(f"{where}: |product| up to {np.abs(arr).max():g} exceeds 2^17; not an 8x8-bit multiplier")
    return arr.astype(np.int64)


def _parse_text(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read truth-table file {str(path)!r}: {exc}") from exc
    rows: list[list[float]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].replace(",", " ").replace(";", " ").strip()
        if not line:
            continue
        try:
            rows.append([float(t) for t in line.split()])
        except ValueError as exc:
            raise DataError(f"{str(path)!r} line {lineno}: not a number ({raw.strip()[:60]!r})") from exc
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise DataError(f"{str(path)!r}: rows have different numbers of values ({sorted(widths)[:5]}); expected "
                        "256 rows of 256 products, 65536 single products or 65536 'a b product' triples")
    return np.asarray(rows, dtype=np.float64)


def _from_triples(arr: np.ndarray, where: str, signed: bool | None) -> tuple[np.ndarray, bool]:
    ops = _as_int_table(arr[:, :2], where)
    prod = _as_int_table(arr[:, 2], where)
    is_signed = bool((ops < 0).any()) if signed is None else signed
    lo = -128 if is_signed else 0
    idx = ops - lo
    if (idx < 0).any() or (idx > 255).any():
        rng = "[-128, 127]" if is_signed else "[0, 255]"
        raise DataError(f"{where}: operands outside {rng} for a {'signed' if is_signed else 'unsigned'} table")
    flat = idx[:, 0] * SIZE + idx[:, 1]
    if np.unique(flat).size != SIZE * SIZE:
        raise DataError(f"{where}: the 65536 triples must cover every operand pair exactly once")
    table = np.empty(SIZE * SIZE, dtype=np.int64)
    table[flat] = prod
    return table.reshape(SIZE, SIZE), is_signed


def load_table(path: str | Path, *, name: str | None = None, signed: bool | None = None,
               relative_power: float | None = None, source: str = "") -> Multiplier:
    """A :class:`Multiplier` from a 256x256 truth-table file (``.npy``, or ``.txt`` / ``.csv`` text).

    ``signed`` says whether rows / columns are operands -128..127 (True) or 0..255 (False); for
    matrix forms it defaults to unsigned, for triples it is inferred from negative operands.
    ``relative_power`` defaults to 1.0 (unknown: as costly as the exact multiplier).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"truth-table file {str(p)!r} does not exist")
    where = f"truth-table file {str(p)!r}"
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{where} is not a readable .npy array: {exc}") from exc
    elif p.suffix.lower() in {".txt", ".csv", ".tsv", ".dat"}:
        arr = _parse_text(p)
    else:
        raise DataError(f"{where}: unsupported extension {p.suffix!r}; use .npy, .txt, .csv, .tsv or .dat")
    is_signed = bool(signed)
    if arr.ndim == 2 and arr.shape == (SIZE * SIZE, 3):
        table, is_signed = _from_triples(arr, where, signed)
    elif arr.ndim == 2 and arr.shape == (SIZE, SIZE):
        table = _as_int_table(arr, where)
    elif arr.size == SIZE * SIZE and (arr.ndim == 1 or (arr.ndim == 2 and 1 in arr.shape)):
        table = _as_int_table(arr.reshape(SIZE, SIZE), where)
    else:
        raise DataError(f"{where} has shape {tuple(arr.shape)}; expected 256x256 products, 65536 products "
                        "or 65536 'a b product' triples")
    return Multiplier(name=name or p.stem, table=table, signed=is_signed,
                      relative_power=1.0 if relative_power is None else float(relative_power),
                      description=f"loaded from {p.name}",
                      source=source or ("given by the user" if relative_power is not None
                                        else "unknown: assumed as costly as the exact multiplier"))


def save_table(path: str | Path, mult: Multiplier) -> Path:
    """Write ``mult``'s table as ``.npy`` or as 256 comma-separated lines (``.csv`` / ``.txt``), atomically."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, mult.table)
        return atomic_write_bytes(p, buf.getvalue())
    if p.suffix.lower() in {".csv", ".txt"}:
        kind = "signed, operands -128..127" if mult.signed else "unsigned, operands 0..255"
        lines = [f"# {mult.name}: 256x256 products, row = first operand ({kind})"]
        lines += [",".join(str(int(v)) for v in row) for row in mult.table]
        return atomic_write_text(p, "\n".join(lines) + "\n")
    raise ConfigError(f"cannot save a truth table as {p.suffix!r}; use .npy, .csv or .txt")

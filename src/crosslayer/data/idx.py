"""Reader of the IDX format of MNIST / Fashion-MNIST (LeCun et al.), gzipped or raw.

Hand-written because it is 40 lines and validates what matters: magic number, dtype, dimension
count, sizes and the exact byte length, so a corrupt or truncated file names itself.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from crosslayer.errors import DataError

__all__ = ["read_idx"]

_DTYPES: dict[int, object] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path, *, expect_ndim: int | None = None, expect_shape_tail: tuple[int, ...] | None = None,
             max_items: int = 10_000_000) -> np.ndarray:
    """Read an IDX file into a NumPy array, raising ``DataError`` naming the file on any defect."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError as exc:
        raise DataError(f"data file {str(p)!r} does not exist") from exc
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"data file {str(p)!r} is corrupt or truncated (gzip: {exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"data file {str(p)!r} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    if ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
        raise DataError(f"data file {str(p)!r} has {ndim} dimensions, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"data file {str(p)!r} is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if expect_shape_tail is not None and shape[1:] != expect_shape_tail:
        raise DataError(f"data file {str(p)!r} has item shape {shape[1:]}, expected {expect_shape_tail}")
    if shape[0] > max_items:
        raise DataError(f"data file {str(p)!r} claims {shape[0]} items, more than the {max_items} allowed")
    dtype = np.dtype(_DTYPES[raw[2]])  # type: ignore[call-overload]
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != n_bytes:
        raise DataError(f"data file {str(p)!r} is truncated or padded: header promises {n_bytes} bytes of data "
                        f"for shape {shape}, file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)

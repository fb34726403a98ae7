"""Reader of the IDX format of MNIST / Fashion-MNIST (LeCun et al.), gzipped or raw.

Hand-written because it is short and validates what matters: magic number, dtype, dimension count, sizes
and the exact byte length, so a corrupt or truncated file names itself. Every size comes from the header
and is checked against limits *before* anything is allocated, and a gzipped file is decompressed as a
stream capped at the header's legal size (plus one byte, to notice padding): a small gzip that expands to
gigabytes is refused after reading no more than the legal size.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from crosslayer.errors import DataError

__all__ = ["MAX_IDX_BYTES", "read_idx"]

_DTYPES: dict[int, object] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MAX_IDX_BYTES = 1 << 30  # 1 GiB of payload: the full EMNIST training images are 0.55 GB


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream), in chunks, never more than ``n``."""
    parts, left = [], n
    while left > 0:
        chunk = fh.read(min(left, 1 << 24))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_idx(path: str | Path, *, expect_ndim: int | None = None, expect_shape_tail: tuple[int, ...] | None = None,
             max_items: int = 10_000_000, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file into a NumPy array, raising ``DataError`` naming the file on any defect.

    ``max_items`` bounds the first dimension and ``max_bytes`` the payload; both are checked on the header
    before the payload is read (or, for a gzipped file, decompressed).
    """
    p = Path(path)
    name = str(p)
    try:
        with p.open("rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            fh: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[assignment]
            head = _read_exact(fh, 4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
                raise DataError(f"data file {name!r} is not an IDX file (bad magic number {head.hex()})")
            ndim = head[3]
            if ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
                raise DataError(f"data file {name!r} has {ndim} dimensions, expected {expect_ndim}")
            dims = _read_exact(fh, 4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"data file {name!r} is truncated inside its header")
            shape = tuple(int.from_bytes(dims[4 * i: 4 + 4 * i], "big") for i in range(ndim))
            if expect_shape_tail is not None and shape[1:] != expect_shape_tail:
                raise DataError(f"data file {name!r} has item shape {shape[1:]}, expected {expect_shape_tail}")
            if shape[0] > max_items:
                raise DataError(f"data file {name!r} claims {shape[0]} items, more than the {max_items} allowed")
            dtype = np.dtype(_DTYPES[head[2]])  # type: ignore[call-overload]
            n_bytes = dtype.itemsize
            for d in shape:
                n_bytes *= d  # Python ints: no overflow on absurd headers
            if n_bytes > max_bytes:
                raise DataError(f"data file {name!r} claims shape {shape} ({n_bytes} bytes of data), more than the "
                                f"{max_bytes} bytes allowed")
            header = 4 + 4 * ndim
            if not gz:
                size = p.stat().st_size
                if size - header != n_bytes:
                    raise DataError(f"data file {name!r} is truncated or padded: header promises {n_bytes} bytes "
                                    f"of data for shape {shape}, file holds {size - header}")
            data = _read_exact(fh, n_bytes)
            extra = fh.read(1)
    except FileNotFoundError as exc:
        raise DataError(f"data file {name!r} does not exist") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"data file {name!r} is corrupt or truncated (gzip: {exc})") from exc
    if len(data) != n_bytes or extra:
        held = f"{len(data)}" if not extra else "more"
        raise DataError(f"data file {name!r} is truncated or padded: header promises {n_bytes} bytes of data "
                        f"for shape {shape}, file holds {held}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)

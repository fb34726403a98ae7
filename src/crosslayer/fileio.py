"""Atomic file writing: write to a temporary file in the same folder, then rename, so a killed
run never leaves a half-written file that a later run would trust."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from crosslayer.errors import CrossLayerError

__all__ = ["WriteError", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_creatable_dir",
           "ensure_writable_dir", "finite_json", "save_torch"]


def check_creatable_dir(path: str | os.PathLike[str]) -> None:
    """Fail early, creating nothing, when ``path`` cannot become a directory this process writes in: the
    nearest part of it that exists must be a directory it may write in (a file in the way, or a read-only
    folder, is the same clear error as :func:`ensure_writable_dir` gives later)."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        reason = f"{str(probe)!r} is a file, not a folder"
    elif not os.access(probe, os.W_OK | os.X_OK):
        reason = f"{str(probe)!r} is read-only"
    else:
        return
    raise CrossLayerError(f"output directory {str(p)!r} is not writable ({reason}); choose another with --out")


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".probe-"):
            pass
    except OSError as exc:
        raise CrossLayerError(f"output directory {str(p)!r} is not writable ({exc.strerror or exc}); "
                              "choose another with --out") from exc
    return p


class WriteError(CrossLayerError):
    """A file that could not be written (a full disk, a read-only file or folder, a folder in the way)."""


def _umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[io.BufferedWriter]:
    if path.is_dir():
        raise WriteError(f"cannot write {str(path)!r}: it is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp creates the file readable by its owner only; give it the mode a plain open() would (a run
            # directory is shared with colleagues)
            os.chmod(tmp, 0o666 & ~_umask())
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise WriteError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    p = Path(path)
    with _atomic(p) as fh:
        fh.write(data)
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Strict JSON: NaN and infinities (which JSON cannot express, and which other tools reject) are
    written as ``null``."""
    return atomic_write_text(path, json.dumps(finite_json(obj), indent=2, sort_keys=False, default=_json_default,
                                              allow_nan=False) + "\n")


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (also inside dicts, lists, tuples, numpy / torch scalars) as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy / torch arrays and scalars
        return finite_json(obj.tolist())
    return obj


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` through a temporary file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

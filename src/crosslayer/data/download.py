"""Download a dataset archive into the cache: streamed, size-capped, checksummed, written atomically.

A file is only renamed into place after its whole content matched the published MD5, so a cut connection,
a proxy's error page or a tampered mirror never leaves a file that a later run would trust. The size cap
(a small margin above the published size) bounds what a misbehaving server can make us write.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from crosslayer.errors import DataError

__all__ = ["download_verified", "file_md5"]

log = logging.getLogger(__name__)


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_one(url: str, dest: Path, md5: str, max_bytes: int) -> str | None:
    """Stream ``url`` into ``dest``; ``None`` on success, else why it failed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h, n = hashlib.md5(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                n += len(chunk)
                if n > max_bytes:
                    return f"{url}: more than the {max_bytes} bytes expected"
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != md5:
            return f"{url}: checksum {h.hexdigest()} != expected {md5}"
        os.replace(tmp, dest)
        return None
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def download_verified(urls: Sequence[str], dest: Path, md5: str, max_bytes: int) -> Path:
    """Fetch the first of ``urls`` that yields a file of at most ``max_bytes`` with MD5 ``md5`` into ``dest``.

    A ``dest`` that already holds the right file is reused without a download.
    """
    if dest.is_file() and dest.stat().st_size <= max_bytes and file_md5(dest) == md5:
        return dest
    errors = []
    for url in urls:
        log.info("downloading %s", url)
        err = _fetch_one(url, dest, md5, max_bytes)
        if err is None:
            return dest
        errors.append(err)
    raise DataError(f"could not download {dest.name}: " + "; ".join(errors)
                    + ". Without network access, pass --data-dir or set CROSSLAYER_DATA to a folder with the files")

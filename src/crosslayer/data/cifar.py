"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009) from
their official *binary* distributions, never the pickled Python version.

Binary layout (https://www.cs.toronto.edu/~kriz/cifar.html): fixed-length records of the label byte(s)
followed by 3,072 pixel bytes, the 1,024 red, then green, then blue values of a 32x32 image in row-major
order. CIFAR-10: one label byte, ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and ``test_batch.bin``
in ``cifar-10-batches-bin/``. CIFAR-100: a coarse then a fine label byte (the fine label, 100 classes, is
used), ``train.bin`` and ``test.bin`` in ``cifar-100-binary/``.

Where the files come from: a data folder (``--data-dir`` / ``CROSSLAYER_DATA``) holding the extracted
files (in it, in its ``cifar-10-batches-bin/`` / ``cifar-100-binary/`` folder, or under a ``cifar10/`` /
``cifar100/`` sub-folder) or the ``.tar.gz`` archive itself; else the archive is downloaded into
``$CROSSLAYER_CACHE/data/<name>/`` with its published MD5 checked. Only the expected members are taken
from an archive (regular files of bounded size at their exact names), so no path in it is ever followed.
Every file's size must be a whole number of records, checked before it is read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crosslayer.data.datasets import ImageDataset, cache_dir, resolve_data_dir
from crosslayer.data.download import download_verified
from crosslayer.data.limits import DataLimits, default_limits
from crosslayer.errors import DataError

__all__ = ["CIFAR", "CifarSpec", "load_cifar", "read_cifar_bin"]

log = logging.getLogger(__name__)

_PIXELS = 3 * 32 * 32
_URL = "https://www.cs.toronto.edu/~kriz/"
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class CifarSpec:
    key: str
    archive: str
    md5: str
    archive_bytes: int
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int          # label bytes at the start of each record
    label_index: int          # which of them is the class
    num_classes: int
    names_file: str

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + _PIXELS


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec("cifar10", "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", 170_052_171,
                         "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                         ("test_batch.bin",), 1, 0, 10, "batches.meta.txt"),
    "cifar100": CifarSpec("cifar100", "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8", 168_513_733,
                          "cifar-100-binary", ("train.bin",), ("test.bin",), 2, 1, 100, "fine_label_names.txt"),
}
_MAX_NAMES_BYTES = 1 << 16


def read_cifar_bin(path: Path, spec: CifarSpec, limits: DataLimits) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one binary file, sizes checked before reading."""
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"CIFAR file {name!r} cannot be read ({exc})") from exc
    rec = spec.record_bytes
    if size == 0 or size % rec:
        raise DataError(f"CIFAR file {name!r} is corrupt or truncated: {size} bytes is not a whole number of "
                        f"{rec}-byte records")
    n = size // rec
    limits.check_count(n, f"CIFAR file {name!r}")
    limits.check_total(n * _PIXELS, f"CIFAR file {name!r}")
    try:
        raw = np.fromfile(path, dtype=np.uint8, count=size)
    except OSError as exc:
        raise DataError(f"CIFAR file {name!r} cannot be read ({exc})") from exc
    if raw.size != size:
        raise DataError(f"CIFAR file {name!r} changed while it was read")
    records = raw.reshape(n, rec)
    labels = records[:, spec.label_index].astype(np.int64)
    bad = np.flatnonzero(labels >= spec.num_classes)
    if bad.size:
        raise DataError(f"CIFAR file {name!r} record {int(bad[0])} has label {int(labels[bad[0]])}, beyond the "
                        f"{spec.num_classes} classes of {spec.key}")
    return records[:, spec.label_bytes:].reshape(n, 3, 32, 32), labels


def _candidates(folder: Path, spec: CifarSpec) -> list[Path]:
    return [folder / spec.folder, folder, folder / spec.key / spec.folder, folder / spec.key]


def _extract(archive: Path, spec: CifarSpec, dest: Path) -> Path:
    """Copy the expected members of ``archive`` into ``dest/<folder>/``, each bounded in size."""
    wanted = {f"{spec.folder}/{f}": f for f in (*spec.train_files, *spec.test_files, spec.names_file)}
    max_member = 60_000 * spec.record_bytes
    out = dest / spec.folder
    out.mkdir(parents=True, exist_ok=True)
    found: set[str] = set()
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                key = member.name.removeprefix("./")
                if key not in wanted:
                    continue
                if not member.isfile() or member.size > (max_member if key.endswith(".bin") else _MAX_NAMES_BYTES):
                    raise DataError(f"archive {str(archive)!r} member {member.name!r} is not a regular file of "
                                    "plausible size")
                src = tar.extractfile(member)
                if src is None:
                    raise DataError(f"archive {str(archive)!r} member {member.name!r} cannot be read")
                fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{wanted[key]}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        while chunk := src.read(1 << 20):
                            fh.write(chunk)
                    os.replace(tmp, out / wanted[key])
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                found.add(key)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"archive {str(archive)!r} is corrupt or truncated ({exc})") from exc
    missing = sorted(k for k in wanted if k not in found and k.endswith(".bin"))
    if missing:
        raise DataError(f"archive {str(archive)!r} lacks {', '.join(missing)}")
    return out


def _locate(spec: CifarSpec, data_dir: str | Path | None) -> Path:
    """The folder holding ``spec``'s binary files (extracting or downloading the archive when needed)."""
    needed = (*spec.train_files, *spec.test_files)
    folder = resolve_data_dir(data_dir)
    roots = [folder] if folder is not None else [cache_dir() / "data" / spec.key]
    for root in roots:
        for cand in _candidates(root, spec):
            if all((cand / f).is_file() for f in needed):
                return cand
    if folder is not None:
        for cand in (folder / spec.archive, folder / spec.key / spec.archive):
            if cand.is_file():
                return _extract(cand, spec, cache_dir() / "data" / spec.key)
        raise DataError(f"{spec.key} files ({', '.join(needed)}) not found in data folder {str(folder)!r} (looked in "
                        f"it, in {spec.folder}/, {spec.key}/ and for {spec.archive}); this loader reads the binary "
                        "version, never the pickled Python one")
    cache = cache_dir() / "data" / spec.key
    archive = download_verified([_URL + spec.archive], cache / spec.archive, spec.md5,
                                max_bytes=spec.archive_bytes + (1 << 20))
    out = _extract(archive, spec, cache)
    with contextlib.suppress(OSError):
        archive.unlink()  # the extracted, structure-checked records are what later runs read
    return out


def _class_names(folder: Path, spec: CifarSpec) -> tuple[str, ...]:
    p = folder / spec.names_file
    if p.is_file() and p.stat().st_size <= _MAX_NAMES_BYTES:
        names = tuple(s.strip() for s in p.read_text(encoding="utf-8", errors="replace").splitlines() if s.strip())
        if len(names) == spec.num_classes:
            return names
    if spec.key == "cifar10":
        return _CIFAR10_CLASSES
    return tuple(str(i) for i in range(spec.num_classes))


def load_cifar(key: str, split: str, data_dir: str | Path | None = None,
               limits: DataLimits | None = None) -> ImageDataset:
    """``split`` ('train' or 'test') of CIFAR-10 / CIFAR-100 as float images in [0, 1], shape (N, 3, 32, 32)."""
    spec = CIFAR[key]
    if split not in ("train", "test"):
        raise DataError(f"{key} has the splits 'train' and 'test', not {split!r}")
    limits = limits or default_limits()
    folder = _locate(spec, data_dir)
    parts = [read_cifar_bin(folder / f, spec, limits) for f in (spec.train_files if split == "train" else
                                                                spec.test_files)]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    limits.check_count(len(labels), f"{key} {split}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return ImageDataset(key, split, x, torch.from_numpy(labels), _class_names(folder, spec), str(folder))

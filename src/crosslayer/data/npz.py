"""Image classification data from a NumPy ``.npz`` file: ``x_train, y_train, x_test, y_test`` (and optionally
``x_val, y_val`` for a fixed validation split, ``classes`` for class names).

Images are ``(N, H, W)`` (one channel) or ``(N, H, W, C)`` (channels last), either ``uint8`` in 0-255 or
floating point in [0, 1]; labels are integers in [0, K). The file is opened with ``allow_pickle=False``, so
an object array is refused rather than unpickled, and every array's shape and dtype are read from its
``.npy`` header and checked against :class:`~crosslayer.data.limits.DataLimits` before its data are loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from crosslayer.data.datasets import ImageDataset
from crosslayer.data.limits import DataLimits, default_limits
from crosslayer.errors import DataError

__all__ = ["load_npz", "npz_splits"]


def _header(zf: zipfile.ZipFile, key: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``key`` from its ``.npy`` header alone."""
    try:
        with zf.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"array {key!r} in {name!r} has an unreadable header ({exc})") from exc
    return tuple(int(d) for d in shape), np.dtype(dtype)


def npz_splits(path: str | Path) -> tuple[str, ...]:
    """The splits a ``.npz`` file holds: ('train', 'test') and 'val' when it has ``x_val`` / ``y_val``."""
    keys = _keys(Path(path))
    return ("train", "test", "val") if {"x_val", "y_val"} <= keys else ("train", "test")


def _keys(p: Path) -> set[str]:
    try:
        with zipfile.ZipFile(p) as zf:
            return {n.removesuffix(".npy") for n in zf.namelist() if n.endswith(".npy")}
    except FileNotFoundError as exc:
        raise DataError(f"dataset file {str(p)!r} does not exist") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"dataset file {str(p)!r} is not a readable .npz file ({exc})") from exc


def _checked_shapes(p: Path, split: str, limits: DataLimits) -> None:
    name = str(p)
    xk, yk = f"x_{split}", f"y_{split}"
    with zipfile.ZipFile(p) as zf:
        (xs, xd), (ys, yd) = _header(zf, xk, name), _header(zf, yk, name)
    if xd.kind == "O" or yd.kind == "O":
        raise DataError(f"{name!r} holds object arrays ({xk} or {yk}), which would need unpickling; "
                        "save plain numeric arrays")
    if len(xs) not in (3, 4):
        raise DataError(f"{xk} in {name!r} has shape {xs}; images must be (N, H, W) or (N, H, W, C)")
    n, h, w = xs[:3]
    c = xs[3] if len(xs) == 4 else 1
    if len(xs) == 4 and c > limits.max_channels and xs[1] <= 4:
        raise DataError(f"{xk} in {name!r} has shape {xs}, which looks channels-first; store (N, H, W, C)")
    if xd != np.uint8 and xd.kind != "f":
        raise DataError(f"{xk} in {name!r} has dtype {xd}; use uint8 (0-255) or float (0-1)")
    if len(ys) != 1 or yd.kind not in "iu":
        raise DataError(f"{yk} in {name!r} must be a 1-D integer array, got shape {ys} and dtype {yd}")
    if ys[0] != n:
        raise DataError(f"{name!r} holds {n} images in {xk} but {ys[0]} labels in {yk}")
    if n == 0:
        raise DataError(f"{xk} in {name!r} holds no images")
    limits.check_count(n, f"{xk} in {name!r}")
    limits.check_image(h, w, c, f"{xk} in {name!r}")
    limits.check_total(n * h * w * c + n * h * w * c * xd.itemsize // 4, f"{xk} in {name!r}")


def _class_names(npz: np.lib.npyio.NpzFile, name: str, labels_max: int) -> tuple[str, ...]:
    if "classes" not in npz.files:
        return tuple(str(i) for i in range(labels_max + 1))
    try:
        names = npz["classes"]
    except ValueError as exc:
        raise DataError(f"'classes' in {name!r} is not a plain string array ({exc})") from exc
    if names.ndim != 1 or names.dtype.kind not in "UiuS" or names.size == 0:
        raise DataError(f"'classes' in {name!r} must be a 1-D array of class names")
    out = tuple(str(v.decode() if isinstance(v, bytes) else v) for v in names.tolist())
    if len(set(out)) != len(out):
        raise DataError(f"'classes' in {name!r} repeats a class name")
    return out


def load_npz(path: str | Path, split: str = "train", limits: DataLimits | None = None) -> ImageDataset:
    """One split of a ``.npz`` dataset as float images in [0, 1], shape (N, C, H, W)."""
    p = Path(path).expanduser()
    name = str(p)
    limits = limits or default_limits()
    keys = _keys(p)
    need = {f"x_{split}", f"y_{split}"}
    if not need <= keys:
        if split == "val":
            raise DataError(f"{name!r} has no validation split (x_val, y_val)")
        raise DataError(f"{name!r} lacks {', '.join(sorted(need - keys))}; a dataset .npz holds x_train, y_train, "
                        f"x_test, y_test (found: {', '.join(sorted(keys)) or 'no arrays'})")
    if ("x_val" in keys) != ("y_val" in keys):
        raise DataError(f"{name!r} has only one of x_val and y_val; give both or neither")
    present = [s for s in ("train", "test", "val") if f"x_{s}" in keys and f"y_{s}" in keys]
    for s in present:  # every header is checked before any array is loaded
        _checked_shapes(p, s, limits)
    if "classes" in keys:
        with zipfile.ZipFile(p) as zf:
            cs, cd = _header(zf, "classes", name)
        if len(cs) != 1 or cs[0] > limits.max_classes or cd.itemsize > 4096:
            raise DataError(f"'classes' in {name!r} must be a 1-D array of at most {limits.max_classes} short "
                            f"names, got shape {cs} and dtype {cd}")
    try:
        with np.load(p, allow_pickle=False) as npz:
            label_max = max(int(npz[f"y_{s}"].max()) for s in present)
            if label_max >= limits.max_classes:
                raise DataError(f"{name!r} has label {label_max}, beyond the {limits.max_classes} classes allowed")
            classes = _class_names(npz, name, label_max)
            x = npz[f"x_{split}"]
            y = npz[f"y_{split}"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"dataset file {name!r} is corrupt or truncated ({exc})") from exc
    if int(y.min()) < 0 or int(y.max()) >= len(classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise DataError(f"y_{split} in {name!r} has label {bad}, outside 0..{len(classes) - 1}")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataError(f"x_{split} in {name!r} holds NaN or infinite pixels")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"x_{split} in {name!r} holds float pixels in [{lo:g}, {hi:g}]; float images must lie "
                            "in [0, 1] (or store uint8 0-255)")
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        images = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    return ImageDataset(name, split, images, torch.from_numpy(y.astype(np.int64)), classes, name)

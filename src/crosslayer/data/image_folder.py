"""Image classification data from a folder tree: ``train/<class>/*.png|jpg|...``, ``test/<class>/...`` and
optionally ``val/<class>/...`` (a fixed validation split; without it one is drawn from train).

Class names are the sorted sub-folder names of ``train/``; every class needs a folder with at least one image
in each split, and a split may not name a class that ``train/`` lacks. Images are decoded with OpenCV
(``IMREAD_UNCHANGED``: grey, grey + alpha, colour and colour + alpha, 8 or 16 bits), colour converted from
OpenCV's BGR order to RGB, scaled to [0, 1]. All images of a dataset must share one size and one channel
count unless ``resize`` / ``channels`` make them so; otherwise the error names a file of each kind.

Bounded work: the number of files and each file's size are checked before reading, and each image's width,
height and band count are read from its header (Pillow opens files lazily, decoding nothing) and checked
against :class:`~crosslayer.data.limits.DataLimits` before OpenCV decodes it, so a small file that would
decode to gigapixels is refused.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from crosslayer.data.datasets import ImageDataset
from crosslayer.data.limits import DataLimits, default_limits
from crosslayer.data.transforms import convert_channels, resize_images
from crosslayer.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "folder_splits", "is_image_folder", "load_image_folder"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir()


def folder_splits(root: str | Path) -> tuple[str, ...]:
    """('train', 'test') and 'val' when the folder has a ``val/`` split."""
    return ("train", "test", "val") if (Path(root) / "val").is_dir() else ("train", "test")


def _class_folders(split_dir: Path, root: Path) -> dict[str, Path]:
    try:
        return {d.name: d for d in sorted(split_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    except OSError as exc:
        raise DataError(f"image folder {str(split_dir)!r} cannot be listed ({exc})") from exc


def _list_files(root: Path, split: str, limits: DataLimits) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """(file, class index) pairs of one split, and the class names (from ``train/``)."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"image folder {str(root)!r} has no train/ folder; expected train/<class>/*.png|jpg, "
                        "test/<class>/..., optionally val/<class>/...")
    classes = tuple(_class_folders(train_dir, root))
    if not classes:
        raise DataError(f"{str(train_dir)!r} holds no class folders; expected train/<class>/<images>")
    if len(classes) > limits.max_classes:
        raise DataError(f"{str(train_dir)!r} holds {len(classes)} class folders, more than the "
                        f"{limits.max_classes} allowed")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"image folder {str(root)!r} has no {split}/ folder")
    found = _class_folders(split_dir, root)
    stray = sorted(set(found) - set(classes))
    if stray:
        raise DataError(f"class folder {str(split_dir / stray[0])!r} has no counterpart in {str(train_dir)!r}; "
                        "every class needs a train/ folder")
    files: list[tuple[Path, int]] = []
    for idx, cls in enumerate(classes):
        folder = split_dir / cls
        if cls not in found:
            raise DataError(f"class folder {str(folder)!r} is missing; every class of train/ needs a folder in "
                            f"{split}/ too")
        images = []
        for f in sorted(folder.iterdir()):
            if f.name.startswith("."):
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                images.append((f, idx))
            else:
                log.warning("skipping %s (not an image file: %s)", f, ", ".join(IMAGE_SUFFIXES))
            limits.check_count(len(files) + len(images), f"image folder {str(split_dir)!r}")
        if not images:
            raise DataError(f"class folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += images
    return files, classes


def _probe(path: Path, limits: DataLimits) -> tuple[int, int]:
    """(height, width) from the file's header, checked against the limits before decoding."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"image {str(path)!r} cannot be read ({exc})") from exc
    if size > limits.max_file_bytes:
        raise DataError(f"image {str(path)!r} is {size} bytes, more than the {limits.max_file_bytes} allowed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides below
            with Image.open(path) as im:  # lazy: reads the header only
                w, h = im.size
                bands = len(im.getbands())
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's own bound refused it before ours
        raise DataError(f"image {str(path)!r} claims {claimed.group(1) + ' pixels' if claimed else 'too many pixels'}, "
                        f"more than the limit of {limits.max_pixels}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"image {str(path)!r} is unreadable or not an image ({exc})") from exc
    limits.check_image(h, w, bands, f"image {str(path)!r}")
    return h, w


def _decode(path: Path, limits: DataLimits) -> np.ndarray:
    """One image as float32 (H, W, C) in [0, 1], RGB(A) channel order."""
    _probe(path, limits)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error) as exc:
        raise DataError(f"image {str(path)!r} is unreadable ({exc})") from exc
    if img is None or img.size == 0:
        raise DataError(f"image {str(path)!r} is unreadable or corrupt (OpenCV could not decode it)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if img.dtype.kind == "f":
        if not np.isfinite(img).all():
            raise DataError(f"image {str(path)!r} holds NaN or infinite pixels")
        return np.clip(img.astype(np.float32), 0.0, 1.0)
    raise DataError(f"image {str(path)!r} has pixel type {img.dtype}; use 8- or 16-bit images")


def load_image_folder(root: str | Path, split: str = "train", *, resize: tuple[int, int] | None = None,
                      channels: int | None = None, limits: DataLimits | None = None) -> ImageDataset:
    """One split of an image folder as float images in [0, 1], shape (N, C, H, W)."""
    base = Path(root).expanduser()
    limits = limits or default_limits()
    files, classes = _list_files(base, split, limits)
    x: torch.Tensor | None = None
    first_path = files[0][0]
    for i, (path, _) in enumerate(files):
        img = torch.from_numpy(np.ascontiguousarray(_decode(path, limits).transpose(2, 0, 1))).unsqueeze(0)
        if channels is not None:
            img = convert_channels(img, channels, f"image {str(path)!r}")
        if resize is not None:
            img = resize_images(img, resize)
        if x is None:
            limits.check_total(len(files) * img.numel(), f"image folder {str(base / split)!r}")
            x = torch.empty(len(files), *img.shape[1:], dtype=torch.float32)
        elif img.shape[1:] != x.shape[1:]:
            s1, s2 = tuple(x.shape[1:]), tuple(img.shape[1:])
            what, fix = ("channel counts", "channels") if s1[0] != s2[0] else ("sizes", "resize")
            raise DataError(f"images of mixed {what}: {str(first_path)!r} is {s1[0]} x {s1[1]} x {s1[2]} (C x H x W), "
                            f"{str(path)!r} is {s2[0]} x {s2[1]} x {s2[2]}; set {fix} to convert them")
        x[i] = img[0]
    assert x is not None  # _list_files never returns an empty list
    y = torch.tensor([c for _, c in files], dtype=torch.int64)
    return ImageDataset(str(base), split, x, y, classes, str(base))

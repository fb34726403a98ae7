"""One entry point for every dataset source: a name (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``),
a path to a ``.npz`` file, or a path to an image folder (``train/<class>/...``, ``test/<class>/...``).

Whatever the source, a split is an :class:`~crosslayer.data.datasets.ImageDataset` of float32 images in
[0, 1], shape (N, C, H, W), with int64 labels in [0, K); ``resize`` and ``channels`` bring every source to a
fixed size and channel count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crosslayer.data.datasets import _ALIASES as _IDX_ALIASES
from crosslayer.data.datasets import DATASETS, ImageDataset, load_idx_dataset
from crosslayer.data.limits import DataLimits, default_limits
from crosslayer.data.transforms import convert_channels, parse_size, resize_images
from crosslayer.errors import DataError

__all__ = ["DATASET_NAMES", "DatasetSource", "available_splits", "load_dataset", "resolve_source"]

DATASET_NAMES: tuple[str, ...] = (*DATASETS, "cifar10", "cifar100")
_CIFAR_ALIASES = {"cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100"}


@dataclass(frozen=True)
class DatasetSource:
    """What a ``dataset`` string names: ``kind`` is 'idx', 'cifar', 'npz' or 'folder'; ``key`` the canonical
    name or the path."""

    kind: str
    key: str


def resolve_source(dataset: str) -> DatasetSource:
    """Classify ``dataset`` as a built-in name, an ``.npz`` file or an image folder, or raise ``DataError``."""
    text = str(dataset).strip()
    low = text.lower()
    if low in DATASETS or low in _IDX_ALIASES:
        return DatasetSource("idx", _IDX_ALIASES.get(low, low))
    if low in ("cifar10", "cifar100") or low in _CIFAR_ALIASES:
        return DatasetSource("cifar", _CIFAR_ALIASES.get(low, low))
    if not text:
        raise DataError("no dataset given; name one of " + ", ".join(DATASET_NAMES)
                        + ", or give a path to a .npz file or an image folder")
    p = Path(text).expanduser()
    if p.suffix.lower() == ".npz":
        if not p.is_file():
            raise DataError(f"dataset file {str(p)!r} does not exist")
        return DatasetSource("npz", str(p))
    if p.is_dir():
        if not (p / "train").is_dir():
            raise DataError(f"dataset folder {str(p)!r} has no train/ folder; an image folder holds "
                            "train/<class>/<images>, test/<class>/<images> and optionally val/<class>/<images>")
        return DatasetSource("folder", str(p))
    if p.exists():
        raise DataError(f"dataset {str(p)!r} is neither a .npz file nor an image folder")
    raise DataError(f"unknown dataset {text!r}; choose one of {', '.join(DATASET_NAMES)}, or give a path to a .npz "
                    "file or an image folder (train/<class>/..., test/<class>/...)")


def available_splits(dataset: str) -> tuple[str, ...]:
    """The splits ``dataset`` provides: always 'train' and 'test'; 'val' for an image folder with ``val/``
    or an ``.npz`` file with ``x_val`` / ``y_val``."""
    src = resolve_source(dataset)
    if src.kind == "npz":
        from crosslayer.data.npz import npz_splits

        return npz_splits(src.key)
    if src.kind == "folder":
        from crosslayer.data.image_folder import folder_splits

        return folder_splits(src.key)
    return ("train", "test")


def load_dataset(dataset: str, split: str = "train", data_dir: str | Path | None = None, *,
                 resize: int | tuple[int, int] | None = None, channels: int | None = None,
                 limits: DataLimits | None = None) -> ImageDataset:
    """``split`` ('train', 'test', or 'val' where the source has one) of ``dataset`` as tensors.

    ``data_dir`` (else ``CROSSLAYER_DATA``, else the download cache) is where named datasets are looked
    for; a path names its own files. ``resize`` (a side or (height, width)) and ``channels`` (1, 3 or 4)
    convert every image; ``limits`` bound what a file may ask for.
    """
    src = resolve_source(dataset)
    size = parse_size(resize)
    if channels is not None and channels not in (1, 3, 4):
        raise DataError(f"channels must be 1, 3 or 4, got {channels}")
    if split not in ("train", "test", "val"):
        raise DataError(f"unknown split {split!r}; choose 'train', 'test' or 'val'")
    limits = limits or default_limits()
    if split == "val" and split not in available_splits(dataset):
        raise DataError(f"dataset {dataset!r} has no separate validation split; one is drawn from its training "
                        "split instead (load_splits does this)")
    if src.kind == "folder":
        from crosslayer.data.image_folder import load_image_folder

        return load_image_folder(src.key, split, resize=size, channels=channels, limits=limits)
    if src.kind == "idx":
        ds = load_idx_dataset(src.key, split, data_dir)
    elif src.kind == "cifar":
        from crosslayer.data.cifar import load_cifar

        ds = load_cifar(src.key, split, data_dir, limits)
    else:
        from crosslayer.data.npz import load_npz

        ds = load_npz(src.key, split, limits)
    if len(ds) == 0:
        raise DataError(f"the {split} split of {dataset!r} holds no images ({ds.source}); accuracy on it would be "
                        "undefined")
    x = ds.images
    if channels is not None:
        x = convert_channels(x, channels, f"{dataset} {split}")
    if size is not None:
        limits.check_total(x.shape[0] * x.shape[1] * size[0] * size[1], f"{dataset} {split} resized to {size}")
        x = resize_images(x, size)
    if x is ds.images:
        return ds
    return ImageDataset(ds.name, ds.split, x, ds.labels, ds.classes, ds.source)

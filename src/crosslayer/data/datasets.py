"""The in-memory dataset type, and MNIST / Fashion-MNIST from their standard IDX files.

Other sources (CIFAR-10 / CIFAR-100 binaries, image folders, ``.npz`` files) live in their own modules;
:func:`crosslayer.data.sources.load_dataset` chooses among them by name or path.

Where the files come from, in order: an explicit ``data_dir`` (``--data-dir``), the environment
variable ``CROSSLAYER_DATA``, else a cache (``CROSSLAYER_CACHE`` or ``~/.cache/crosslayer``) filled by
downloading from the usual public mirrors with an MD5 check. A folder is searched both directly and
in a sub-folder named after the dataset (``mnist/``, ``fashion-mnist/``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crosslayer.data.idx import read_idx
from crosslayer.errors import DataError

__all__ = ["DATASETS", "ImageDataset", "cache_dir", "load_dataset", "load_idx_dataset", "resolve_data_dir"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Spec:
    folder: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    classes: tuple[str, ...]


_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DATASETS: dict[str, _Spec] = {
    "mnist": _Spec(
        folder="mnist",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        classes=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": _Spec(
        folder="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    ),
}
_ALIASES = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist"}


@dataclass(frozen=True)
class ImageDataset:
    """Images as float32 in [0, 1], shape (N, C, H, W); labels int64, shape (N,)."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def fingerprint(self) -> str:
        """A short content hash, so caches notice when the data change."""
        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def subset(self, n: int) -> ImageDataset:
        return ImageDataset(self.name, self.split, self.images[:n], self.labels[:n], self.classes, self.source)

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the pixels (for a model's input normalisation)."""
        c = self.images.shape[1]
        mean, sq = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
        for i in range(0, len(self), 4096):
            chunk = self.images[i:i + 4096].double()
            mean += chunk.sum(dim=(0, 2, 3))
            sq += chunk.square().sum(dim=(0, 2, 3))
        count = max(1, len(self) * self.images.shape[2] * self.images.shape[3])
        mu = mean / count
        std = (sq / count - mu.square()).clamp_min(0).sqrt().clamp_min(1e-3)
        return tuple(mu.tolist()), tuple(std.tolist())


def cache_dir() -> Path:
    return Path(os.environ.get("CROSSLAYER_CACHE") or Path.home() / ".cache" / "crosslayer")


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The folder given explicitly or through ``CROSSLAYER_DATA``; ``None`` means 'download into the cache'."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("CROSSLAYER_DATA") or None
    if chosen is None:
        return None
    p = Path(chosen).expanduser()
    if not p.is_dir():
        raise DataError(f"data folder {str(p)!r} does not exist; pass --data-dir or set CROSSLAYER_DATA "
                        "to a folder of the standard IDX files, or leave both unset to download")
    return p


def _find_local(folder: Path, spec: _Spec, filename: str) -> Path | None:
    for cand in (folder / spec.folder / filename, folder / filename,
                 folder / spec.folder / filename.removesuffix(".gz"), folder / filename.removesuffix(".gz")):
        if cand.is_file():
            return cand
    return None


_MAX_IDX_DOWNLOAD = 64 << 20  # the largest MNIST-style file is 26 MB


def _download(spec: _Spec, filename: str, dest: Path) -> Path:
    """Fetch one file into the cache, verifying its MD5; try each mirror in turn (streamed, size-capped)."""
    from crosslayer.data.download import download_verified

    return download_verified([m + filename for m in spec.mirrors], dest, spec.md5[filename], _MAX_IDX_DOWNLOAD)


def _locate(spec: _Spec, filename: str, data_dir: Path | None) -> Path:
    if data_dir is not None:
        found = _find_local(data_dir, spec, filename)
        if found is None:
            raise DataError(f"{filename} not found in data folder {str(data_dir)!r} "
                            f"(looked in it and in its sub-folder {spec.folder}/)")
        return found
    return _download(spec, filename, cache_dir() / "data" / spec.folder / filename)


def load_dataset(name: str, split: str = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """Any dataset by name or path; see :func:`crosslayer.data.sources.load_dataset`."""
    from crosslayer.data.sources import load_dataset as load_any

    return load_any(name, split, data_dir)


def load_idx_dataset(name: str, split: str = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """Load ``split`` ('train' or 'test') of MNIST or Fashion-MNIST as tensors."""
    key = canonical_name(name)
    if split not in _FILES:
        raise DataError(f"unknown split {split!r}; choose 'train' or 'test'")
    spec = DATASETS[key]
    folder = resolve_data_dir(data_dir)
    img_file, lbl_file = (_locate(spec, f, folder) for f in _FILES[split])
    images = read_idx(img_file, expect_ndim=3, expect_shape_tail=(28, 28))
    labels = read_idx(lbl_file, expect_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{str(img_file)!r} holds {images.shape[0]} images but {str(lbl_file)!r} holds "
                        f"{labels.shape[0]} labels")
    if images.dtype != np.uint8:
        raise DataError(f"{str(img_file)!r} holds {images.dtype} pixels; MNIST-style image files hold unsigned bytes")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{str(lbl_file)!r} holds {labels.dtype} labels; labels must be integers")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(spec.classes)):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DataError(f"{str(lbl_file)!r} has label {bad}, outside the classes 0..{len(spec.classes) - 1}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(key, split, x, y, spec.classes, str(img_file.parent))

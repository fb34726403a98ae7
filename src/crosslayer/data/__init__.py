"""Datasets: MNIST / Fashion-MNIST (IDX), CIFAR-10 / CIFAR-100 (binary), image folders and ``.npz`` files, with
download + cache, bounded reads, seeded train / validation splits and in-memory batches."""

from pathlib import Path

import torch

from crosslayer.data.datasets import DATASETS, ImageDataset, resolve_data_dir
from crosslayer.data.limits import DataLimits
from crosslayer.data.sources import DATASET_NAMES, available_splits, load_dataset, resolve_source
from crosslayer.data.split import Batches, DataSplits, train_val_split
from crosslayer.errors import DataError

__all__ = ["DATASETS", "DATASET_NAMES", "Batches", "DataLimits", "DataSplits", "ImageDataset", "available_splits",
           "load_dataset", "load_splits", "resolve_data_dir", "resolve_source", "train_val_split"]


def _sample(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    if n >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return ImageDataset(ds.name, ds.split, ds.images[idx], ds.labels[idx], ds.classes, ds.source)


def load_splits(dataset: str, data_dir: str | Path | None = None, *, val_fraction: float = 0.1, seed: int = 0,
                train_limit: int | None = None, test_limit: int | None = None,
                resize: int | tuple[int, int] | None = None, channels: int | None = None,
                limits: DataLimits | None = None) -> DataSplits:
    """Train / validation / test of one dataset (a name, a ``.npz`` path or an image-folder path).

    The validation split is the source's own when it has one (an image folder's ``val/``, an ``.npz``'s
    ``x_val`` / ``y_val``), else a seeded ``val_fraction`` of the training split. ``*_limit`` keep the
    first N samples (for quick runs; a seeded sample of N for an image folder, whose files come class by
    class); ``resize`` and ``channels`` convert every image (see :func:`~crosslayer.data.sources.load_dataset`).
    An empty split is an error, never a NaN accuracy.
    """
    def load(split: str) -> ImageDataset:
        return load_dataset(dataset, split, data_dir, resize=resize, channels=channels, limits=limits)

    full, test = load("train"), load("test")
    # An image folder lists its images class by class, so its limits take a seeded sample, not the first N.
    by_class = resolve_source(dataset).kind == "folder"
    if train_limit:
        full = _sample(full, train_limit, seed) if by_class else full.subset(train_limit)
    if test_limit:
        test = _sample(test, test_limit, seed) if by_class else test.subset(test_limit)
    if "val" in available_splits(dataset):
        train, val = full, load("val")
    else:
        if len(full) < 2:
            raise DataError(f"the training split of {dataset!r} holds {len(full)} image(s); at least 2 are needed to "
                            "split off a validation set")
        train, val = train_val_split(full, val_fraction, seed)
    for part in (train, val, test):
        if len(part) == 0:
            raise DataError(f"the {part.split} split of {dataset!r} holds no images; accuracy on it would be "
                            "undefined")
    if not train.classes == val.classes == test.classes or not train.input_shape == val.input_shape == test.input_shape:
        raise DataError(f"the splits of {dataset!r} disagree: train {train.input_shape} with {train.num_classes} "
                        f"classes, val {val.input_shape}, test {test.input_shape} with {test.num_classes} classes; "
                        "give them one image size (or set resize) and one class list")
    return DataSplits(train=train, val=val, test=test)

"""Datasets: IDX loaders with download + cache, seeded splits, in-memory batches."""

from crosslayer.data.datasets import DATASETS, ImageDataset, load_dataset, resolve_data_dir
from crosslayer.data.split import Batches, DataSplits, train_val_split

__all__ = ["DATASETS", "Batches", "DataSplits", "ImageDataset", "load_dataset", "load_splits",
           "resolve_data_dir", "train_val_split"]


def load_splits(name: str, data_dir: str | None = None, *, val_fraction: float = 0.1, seed: int = 0,
                train_limit: int | None = None, test_limit: int | None = None) -> DataSplits:
    """Train / validation / test of one dataset; ``*_limit`` keep the first N samples (for quick runs)."""
    full = load_dataset(name, "train", data_dir)
    test = load_dataset(name, "test", data_dir)
    if train_limit:
        full = full.subset(train_limit)
    if test_limit:
        test = test.subset(test_limit)
    train, val = train_val_split(full, val_fraction, seed)
    return DataSplits(train=train, val=val, test=test)

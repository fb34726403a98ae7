"""Hostile IDX files (issue 13): decompression bombs, absurd headers, negative labels, empty test sets."""

import gzip
import struct
import time
import tracemalloc

import numpy as np
import pytest

from crosslayer.data import load_dataset, load_splits
from crosslayer.data.idx import read_idx
from crosslayer.errors import DataError


def _header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)


def _idx(arr: np.ndarray, code: int = 0x08) -> bytes:
    return _header(code, arr.shape) + arr.tobytes()


def _mnist_folder(folder, n=10, labels=None, label_code=0x08, n_test=None):
    rng = np.random.default_rng(0)
    for split, k in (("train", n), ("t10k", n if n_test is None else n_test)):
        imgs = rng.integers(0, 256, size=(k, 28, 28), dtype=np.uint8)
        lbls = rng.integers(0, 10, size=(k,)).astype(np.uint8) if labels is None else labels[:k]
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs)))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(lbls, label_code)))


def test_gzip_bomb_refused_without_full_decompression(tmp_path):
    """A 2 MB gzip expanding to 2 GB: refused after reading no more than the header's legal size."""
    legal = _idx(np.zeros((100, 28, 28), np.uint8))
    pad = gzip.compress(b"\0" * (1 << 20), compresslevel=9)  # one member: 1 MiB of zeros in ~1 KB
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with bomb.open("wb") as fh:
        fh.write(gzip.compress(legal))
        for _ in range(2048):  # 2048 more members: 2 GiB once decompressed
            fh.write(pad)
    assert bomb.stat().st_size < 4 << 20
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DataError, match="truncated or padded.*holds more"):
            read_idx(bomb, expect_ndim=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB: the bomb was decompressed"
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize("shape, message", [
    ((2**31, 28, 28), "items, more than"),
    ((60_000, 60_000, 60_000), "bytes allowed"),
    ((5, 29, 28), "expected .28, 28."),
])
def test_absurd_headers_refused_before_allocating(tmp_path, shape, message):
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_header(0x08, shape) + b"\0" * 100))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=message):
            read_idx(p, expect_ndim=3, expect_shape_tail=(28, 28) if message.startswith("expected") else None)
        assert tracemalloc.get_traced_memory()[1] < 4 << 20
    finally:
        tracemalloc.stop()


def test_raw_file_size_checked_from_stat(tmp_path):
    p = tmp_path / "raw-idx1-ubyte"
    p.write_bytes(_header(0x08, (1000,)))
    with p.open("r+b") as fh:
        fh.truncate(8 + 10**9)  # sparse: a 1 GB file claiming 1000 bytes of labels
    with pytest.raises(DataError, match="truncated or padded.*file holds 1000000000"):
        read_idx(p)


def test_negative_and_out_of_range_labels(tmp_path):
    _mnist_folder(tmp_path, labels=np.array([0, 1, -3, 2, 4, 5, 6, 7, 8, 9], np.int8), label_code=0x09)
    with pytest.raises(DataError, match="labels-idx1-ubyte.gz' has label -3, outside the classes 0..9"):
        load_dataset("mnist", "train", tmp_path)
    _mnist_folder(tmp_path, labels=np.array([0, 1, 12, 2, 4, 5, 6, 7, 8, 9], np.uint8))
    with pytest.raises(DataError, match="has label 12, outside"):
        load_dataset("mnist", "test", tmp_path)
    _mnist_folder(tmp_path, labels=np.arange(10, dtype=">f4"), label_code=0x0D)
    with pytest.raises(DataError, match="labels must be integers"):
        load_dataset("mnist", "test", tmp_path)


def test_empty_test_set_is_an_error_not_nan(tmp_path):
    _mnist_folder(tmp_path, n=10, n_test=0)  # well-formed files holding no test images
    with pytest.raises(DataError, match="test split of 'mnist' holds no images"):
        load_splits("mnist", tmp_path)
    with pytest.raises(DataError, match="test split of 'mnist' holds no images"):
        load_dataset("mnist", "test", tmp_path)  # what `crosslayer eval` and the other commands read


def test_mnist_splits_unchanged(data_dir):
    """The MNIST path through the new dispatcher gives the same tensors as before (the figures depend on it)."""
    from crosslayer.data.datasets import load_idx_dataset

    s = load_splits("mnist", str(data_dir), train_limit=10000, test_limit=2000, seed=0)
    direct = load_idx_dataset("mnist", "test", data_dir)
    assert s.test.images.shape == (2000, 1, 28, 28)
    assert s.test.fingerprint() == direct.subset(2000).fingerprint()
    assert (len(s.train), len(s.val)) == (9000, 1000)

import gzip
import hashlib
import struct

import numpy as np
import pytest

from crosslayer.data import datasets as ds_mod
from crosslayer.data import load_dataset, load_splits, train_val_split
from crosslayer.data.idx import read_idx
from crosslayer.errors import DataError


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist_folder(folder, n=20, corrupt=None):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    lbls = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    for split in ("train", "t10k"):
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(imgs)))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(lbls)))
    return imgs, lbls


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    p = tmp_path / "x.idx"
    p.write_bytes(_idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(p, expect_ndim=3), arr)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x01\x02" + b[2:], "bad magic"),
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\x00", "padded"),
    (lambda b: b[:3], "not an IDX"),
])
def test_read_idx_rejects_defects_naming_the_file(tmp_path, mutate, message):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)
    p = tmp_path / "broken-idx3-ubyte"
    p.write_bytes(mutate(_idx_bytes(arr)))
    with pytest.raises(DataError, match="broken-idx3-ubyte") as exc:
        read_idx(p)
    assert message.split()[0] in str(exc.value) or "magic" in str(exc.value)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8)))[:30])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(p)


def test_local_folder_and_env_variable(tmp_path, monkeypatch):
    _, lbls = _write_mnist_folder(tmp_path)
    ds = load_dataset("mnist", "test", tmp_path)
    assert ds.images.shape == (20, 1, 28, 28)
    assert float(ds.images.max()) <= 1.0
    np.testing.assert_array_equal(ds.labels.numpy(), lbls)
    monkeypatch.setenv("CROSSLAYER_DATA", str(tmp_path))
    assert len(load_dataset("mnist", "train")) == 20


def test_missing_file_and_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", "train", tmp_path / "nope")
    with pytest.raises(DataError, match="not found in data folder"):
        load_dataset("mnist", "train", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'cifar1000'"):
        load_dataset("cifar1000")


def test_label_count_mismatch(tmp_path):
    _write_mnist_folder(tmp_path)
    lbl = np.zeros(7, dtype=np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(lbl)))
    with pytest.raises(DataError, match="20 images but"):
        load_dataset("mnist", "test", tmp_path)


def test_download_verifies_checksum_and_caches(tmp_path, monkeypatch):
    """The download path: a wrong checksum is refused, a right one is cached and reused."""
    payload = gzip.compress(_idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8)))
    calls = []

    class Resp:
        def __init__(self, data):
            self.data = data

        def read(self, n=-1):
            out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
            return out

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def fake_urlopen(url, timeout):
        calls.append(url)
        return Resp(payload)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    monkeypatch.delenv("CROSSLAYER_DATA", raising=False)
    monkeypatch.setenv("CROSSLAYER_CACHE", str(tmp_path))
    spec = ds_mod.DATASETS["mnist"]
    with pytest.raises(DataError, match="checksum"):
        ds_mod._locate(spec, "t10k-images-idx3-ubyte.gz", None)
    assert not (tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    good = ds_mod._Spec(spec.folder, spec.mirrors, {**spec.md5, "t10k-images-idx3-ubyte.gz":
                                                    hashlib.md5(payload).hexdigest()}, spec.classes)
    path = ds_mod._locate(good, "t10k-images-idx3-ubyte.gz", None)
    assert path.read_bytes() == payload
    n = len(calls)
    assert ds_mod._locate(good, "t10k-images-idx3-ubyte.gz", None) == path
    assert len(calls) == n, "a cached file with the right checksum is not downloaded again"


def test_real_mnist_and_seeded_split(data_dir):
    splits = load_splits("mnist", str(data_dir), seed=3)
    assert len(splits.train) + len(splits.val) == 10_000
    assert len(splits.test) == 10_000
    again = load_splits("mnist", str(data_dir), seed=3)
    assert again.val.fingerprint() == splits.val.fingerprint()
    other = load_splits("mnist", str(data_dir), seed=4)
    assert other.val.fingerprint() != splits.val.fingerprint()


def test_fashion_mnist_full_size(data_dir):
    train = load_dataset("fashion-mnist", "train", data_dir)
    assert len(train) == 60_000
    assert train.num_classes == 10


def test_split_fraction_validated(mnist_small):
    from crosslayer.errors import ConfigError

    with pytest.raises(ConfigError, match="val_fraction"):
        train_val_split(mnist_small.train, 1.5)

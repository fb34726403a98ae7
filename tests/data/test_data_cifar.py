"""CIFAR-10 / CIFAR-100 from fake binary files in the official layout (the real ones are not available here)."""

import hashlib
import io
import tarfile

import numpy as np
import pytest
import torch

from crosslayer.data import cifar as cifar_mod
from crosslayer.data import load_dataset, load_splits
from crosslayer.data.limits import DataLimits
from crosslayer.errors import DataError


def _records(n: int, label_bytes: int, num_classes: int, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=(n, label_bytes), dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes(), labels, pixels


def _fake_cifar10(folder, n=4):
    d = folder / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    kept = {}
    for i, f in enumerate([*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]):
        raw, labels, pixels = _records(n, 1, 10, seed=i)
        (d / f).write_bytes(raw)
        kept[f] = (labels[:, 0], pixels)
    (d / "batches.meta.txt").write_text("\n".join(cifar_mod._CIFAR10_CLASSES) + "\n\n")
    return d, kept


def test_cifar10_binary_layout_decoded(tmp_path):
    _, kept = _fake_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", tmp_path)
    test = load_dataset("CIFAR-10", "test", tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.classes[0] == "airplane" and train.num_classes == 10
    labels, pixels = kept["test_batch.bin"]
    np.testing.assert_array_equal(test.labels.numpy(), labels)
    # record layout: 1,024 red, then green, then blue bytes, each 32x32 row-major
    img = pixels[2]
    assert test.images[2, 1, 0, 5].item() == pytest.approx(img[1024 + 5] / 255.0)
    assert test.images[2, 2, 31, 31].item() == pytest.approx(img[3071] / 255.0)
    np.testing.assert_array_equal(train.labels[4:8].numpy(), kept["data_batch_2.bin"][0])
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar100" / "cifar-100-binary"
    d.mkdir(parents=True)
    raw_tr, _, _ = _records(6, 2, 20, seed=1)  # coarse < 20, fine < 20 here
    raw_te, lab_te, _ = _records(3, 2, 20, seed=2)
    (d / "train.bin").write_bytes(raw_tr)
    (d / "test.bin").write_bytes(raw_te)
    splits = load_splits("cifar100", tmp_path, val_fraction=0.5, seed=0)
    assert splits.num_classes == 100 and splits.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(load_dataset("cifar100", "test", tmp_path).labels.numpy(), lab_te[:, 1])


@pytest.mark.parametrize("defect, message", [
    (lambda b: b[:-7], "not a whole number"),
    (lambda b: b"", "not a whole number"),
    (lambda b: bytes([10]) + b[1:], "has label 10"),
])
def test_corrupt_cifar_files_name_themselves(tmp_path, defect, message):
    d, _ = _fake_cifar10(tmp_path)
    f = d / "test_batch.bin"
    f.write_bytes(defect(f.read_bytes()))
    with pytest.raises(DataError, match=message) as exc:
        load_dataset("cifar10", "test", tmp_path)
    assert "test_batch.bin" in str(exc.value)


def test_absurd_record_count_refused_before_reading(tmp_path):
    """A sparse file claiming millions of records is refused from its size alone."""
    d, _ = _fake_cifar10(tmp_path)
    f = d / "test_batch.bin"
    with f.open("r+b") as fh:
        fh.truncate(3073 * 2_000_000)  # 6 GB apparent size, no disk used
    with pytest.raises(DataError, match="2000000 images, more than"):
        cifar_mod.read_cifar_bin(f, cifar_mod.CIFAR["cifar10"], DataLimits(max_images=1_000_000))
    with pytest.raises(DataError, match="GiB in memory"):
        load_dataset("cifar10", "test", tmp_path)


def test_missing_files_say_where_they_looked(tmp_path):
    with pytest.raises(DataError, match="not found in data folder.*binary version"):
        load_dataset("cifar10", "train", tmp_path)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _archive_members(n=3):
    members = {f"cifar-10-batches-bin/data_batch_{k}.bin": _records(n, 1, 10, k)[0] for k in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = _records(n, 1, 10, 9)[0]
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(cifar_mod._CIFAR10_CLASSES).encode()
    return members


def test_archive_in_data_folder_is_extracted_safely(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAYER_CACHE", str(tmp_path / "cache"))
    members = _archive_members()
    members["../../evil.txt"] = b"should never be written"
    members["cifar-10-batches-bin/../../../escape.bin"] = b"x"
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-binary.tar.gz").write_bytes(_tar_gz(members))
    ds = load_dataset("cifar10", "test", data)
    assert len(ds) == 3
    assert not (tmp_path / "evil.txt").exists() and not list(tmp_path.rglob("escape.bin"))
    extracted = sorted(p.name for p in (tmp_path / "cache" / "data" / "cifar10" / "cifar-10-batches-bin").iterdir())
    assert extracted == ["batches.meta.txt", *(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]


def test_download_checks_md5_then_extracts(tmp_path, monkeypatch):
    """The download path for users: a wrong checksum is refused and leaves nothing; the right one is cached."""
    payload = _tar_gz(_archive_members(2))
    calls = []

    class Resp(io.BytesIO):
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
    with pytest.raises(DataError, match="checksum"):
        load_dataset("cifar10", "test")
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    assert not [p for p in (tmp_path / "data" / "cifar10").iterdir() if p.is_file()]
    spec = cifar_mod.CIFAR["cifar10"]
    good = cifar_mod.CifarSpec(**{**spec.__dict__, "md5": hashlib.md5(payload).hexdigest(),
                                  "archive_bytes": len(payload)})
    monkeypatch.setitem(cifar_mod.CIFAR, "cifar10", good)
    ds = load_dataset("cifar10", "train")
    assert ds.images.shape == (10, 3, 32, 32) and ds.images.dtype == torch.float32
    n = len(calls)
    load_dataset("cifar10", "test")
    assert len(calls) == n, "extracted files in the cache are reused without a download"

"""Datasets from .npz files: layouts, dtypes, and every defect a clear error naming the file."""

import io
import zipfile

import numpy as np
import pytest
import torch

from crosslayer.data import load_dataset, load_splits
from crosslayer.data.limits import DataLimits
from crosslayer.data.npz import load_npz
from crosslayer.errors import DataError


def _arrays(n_train=12, n_test=5, shape=(8, 8), dtype=np.uint8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    mk = (lambda n: rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)) if dtype == np.uint8 else \
        (lambda n: rng.random(size=(n, *shape)).astype(dtype))
    return {"x_train": mk(n_train), "y_train": rng.integers(0, classes, n_train),
            "x_test": mk(n_test), "y_test": rng.integers(0, classes, n_test)}


def _save(path, **arrays):
    np.savez_compressed(path, **arrays)
    return path


def test_grey_uint8_and_colour_float_layouts(tmp_path):
    a = _arrays(shape=(8, 8))
    a["y_train"][:3] = [0, 1, 2]
    grey = load_dataset(str(_save(tmp_path / "g.npz", **a)), "train")
    assert grey.images.shape == (12, 1, 8, 8) and grey.num_classes == 3
    assert torch.allclose(grey.images[0, 0], torch.from_numpy(a["x_train"][0] / 255.0).float())
    b = _arrays(shape=(6, 10, 3), dtype=np.float32, classes=4)
    b["y_test"][0] = 3
    colour = load_dataset(str(_save(tmp_path / "c.npz", **b)), "test")
    assert colour.images.shape == (5, 3, 6, 10) and colour.num_classes == 4
    assert torch.allclose(colour.images[1, 2], torch.from_numpy(b["x_test"][1, :, :, 2]))


def test_splits_use_own_val_and_class_names(tmp_path):
    a = _arrays()
    a["x_val"], a["y_val"] = a["x_test"][:2], a["y_test"][:2]
    a["classes"] = np.array(["cat", "dog", "fox"])
    s = load_splits(str(_save(tmp_path / "v.npz", **a)), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (12, 2, 5)
    assert s.train.classes == ("cat", "dog", "fox")
    s2 = load_splits(str(_save(tmp_path / "n.npz", **_arrays())), val_fraction=0.25, seed=0)
    assert (len(s2.train), len(s2.val)) == (9, 3)


def test_resize_and_channels(tmp_path):
    p = str(_save(tmp_path / "r.npz", **_arrays(shape=(8, 8))))
    ds = load_dataset(p, "train", resize=(16, 12), channels=3)
    assert ds.images.shape == (12, 3, 16, 12)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2]) and float(ds.images.max()) <= 1.0


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(y_train=a["y_train"][:-1]), "12 images in x_train but 11 labels"),
    (lambda a: a["y_test"].__setitem__(0, -1), "label -1"),
    (lambda a: a.update(classes=np.array(["a", "b"])), "label 2, outside 0..1"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.float32) / 255.0 * np.where(
        np.arange(64).reshape(8, 8) == 5, np.nan, 1.0)), "NaN"),
    (lambda a: a.update(x_test=a["x_test"].astype(np.float32)), r"float pixels in \[\d+, 25\d\]"),
    (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "1-D integer array"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.int16)), "dtype int16"),
    (lambda a: a.update(x_train=a["x_train"][:, :, 0]), "must be .N, H, W. or .N, H, W, C."),
    (lambda a: a.pop("y_test"), "lacks y_test"),
    (lambda a: a.update(x_train=a["x_train"][:0], y_train=a["y_train"][:0]), "holds no images"),
    (lambda a: a.update(x_val=a["x_test"]), "only one of x_val and y_val"),
])
def test_defects_are_clear_errors_naming_the_file(tmp_path, change, message):
    a = _arrays()
    a["y_train"][:3] = [0, 1, 2]
    change(a)
    p = _save(tmp_path / "bad.npz", **a)
    with pytest.raises(DataError, match=message) as exc:
        load_splits(str(p), seed=0)
    assert "bad.npz" in str(exc.value)


def test_object_arrays_are_refused_not_unpickled(tmp_path):
    a = _arrays()
    a["x_train"] = np.array([object()] * 12, dtype=object)
    p = tmp_path / "obj.npz"
    np.savez(p, **a)
    with pytest.raises(DataError, match="object arrays|unpickling"):
        load_dataset(str(p), "train")


def _npy_header(shape, dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_absurd_shapes_refused_from_the_header(tmp_path):
    """Headers claiming huge arrays are refused before loading: the file itself is a few hundred bytes."""
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x_train.npy", _npy_header((2_000_000, 512, 512, 3), np.uint8) + b"\0" * 64)
        zf.writestr("y_train.npy", _npy_header((2_000_000,), np.int64) + b"\0" * 64)
        zf.writestr("x_test.npy", _npy_header((20_000, 8, 8), np.uint8) + b"\0" * 64)
        zf.writestr("y_test.npy", _npy_header((20_000,), np.int64) + b"\0" * 64)
    assert p.stat().st_size < 2000
    with pytest.raises(DataError, match="GiB in memory"):
        load_npz(p, "train")
    with pytest.raises(DataError, match="more than the 1000 allowed"):
        load_npz(p, "test", DataLimits(max_images=1000))
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("x_val.npy", _npy_header((4, 100_000, 100_000), np.uint8))
        zf.writestr("y_val.npy", _npy_header((4,), np.int64))
    with pytest.raises(DataError, match="100000 x 100000 pixels"):
        load_npz(p, "test", DataLimits(max_total_bytes=1 << 62))


def test_not_a_zip_and_missing_file(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="junk.npz.*not a readable .npz"):
        load_dataset(str(p))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))

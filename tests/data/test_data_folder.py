"""Image-folder datasets: class folders, channel handling, resize, and clear errors naming the file."""

import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from crosslayer.data import available_splits, load_dataset, load_splits
from crosslayer.data.limits import DataLimits
from crosslayer.errors import DataError


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _folder(root, classes=("cat", "dog", "eel"), n=(3, 2), size=(10, 12), colour=True, val=False, seed=0):
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if colour else size
    splits = {"train": n[0], "test": n[1], **({"val": 1} if val else {})}
    for split, k in splits.items():
        for c in classes:
            for i in range(k):
                _write(root / split / c / f"{i}.png", rng.integers(0, 256, size=shape, dtype=np.uint8))
    return root


def test_colour_folder_sorted_classes_rgb_order(tmp_path):
    root = _folder(tmp_path / "ds", classes=("zebra", "ant", "moth"))
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 0] = 200  # OpenCV's first channel is blue
    _write(root / "train" / "ant" / "0.png", bgr)
    ds = load_dataset(str(root), "train")
    assert ds.classes == ("ant", "moth", "zebra")
    assert ds.images.shape == (9, 3, 10, 12)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first = ds.images[0]
    assert float(first[2].mean()) == pytest.approx(200 / 255) and float(first[0].max()) == 0.0  # RGB order


def test_grey_jpg_val_split_and_16_bit(tmp_path):
    root = _folder(tmp_path / "g", colour=False, val=True)
    _write(root / "test" / "cat" / "1.png", np.full((10, 12), 65535, np.uint16))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    _write(root / "train" / "dog" / "x.jpg", np.full((10, 12), 128, np.uint8))
    s = load_splits(str(root), seed=0)
    assert available_splits(str(root)) == ("train", "test", "val")
    assert (len(s.train), len(s.val), len(s.test)) == (10, 3, 6)
    assert s.input_shape == (1, 10, 12)
    assert float(s.test.images[1].min()) == 1.0  # 16-bit white scales to 1.0


def test_resize_and_channel_conversion_make_mixed_images_usable(tmp_path):
    root = _folder(tmp_path / "m", size=(10, 12))
    _write(root / "train" / "dog" / "big.png", np.zeros((40, 30, 3), np.uint8))
    _write(root / "train" / "eel" / "grey.png", np.full((10, 12), 255, np.uint8))
    with pytest.raises(DataError, match=r"mixed sizes.*big\.png.*set resize"):
        load_dataset(str(root), "train")
    _write(root / "train" / "dog" / "big.png", np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(DataError, match=r"mixed channel counts.*grey\.png.*set channels"):
        load_dataset(str(root), "train")
    _write(root / "train" / "dog" / "big.png", np.zeros((40, 30, 3), np.uint8))
    ds = load_dataset(str(root), "train", resize=16, channels=3)
    assert ds.images.shape == (11, 3, 16, 16)
    grey_idx = [i for i in range(len(ds)) if float(ds.images[i].min()) == 1.0]
    assert len(grey_idx) == 1  # the grey white image became white RGB
    one = load_dataset(str(root), "test", resize=(8, 6), channels=1)
    assert one.images.shape == (6, 1, 8, 6)


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "test" / "dog" / "0.png").unlink() or (r / "test" / "dog" / "1.png").unlink()
     or (r / "test" / "dog").rmdir(), r"class folder .*test/dog' is missing"),
    (lambda r: _write(r / "test" / "yak" / "0.png", np.zeros((10, 12, 3), np.uint8)),
     r"test/yak' has no counterpart"),
    (lambda r: (r / "train" / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"),
     r"train/cat/1.png' is unreadable"),
    (lambda r: (r / "train" / "cat" / "2.png").write_bytes(b""), r"train/cat/2.png' is unreadable"),
    (lambda r: [p.unlink() for p in (r / "train" / "eel").iterdir()], r"train/eel' holds no images"),
])
def test_folder_defects_name_the_file(tmp_path, damage, message):
    root = _folder(tmp_path / "d")
    damage(root)
    with pytest.raises(DataError, match=message):
        load_splits(str(root), seed=0)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with a tiny (invalid) body: a decompression-bomb stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_image_headers_refused_before_decoding(tmp_path):
    root = _folder(tmp_path / "b")
    (root / "train" / "cat" / "bomb.png").write_bytes(_png_header_only(10_000, 10_000))
    with pytest.raises(DataError, match=r"bomb\.png.*10000 x 10000 pixels"):
        load_dataset(str(root), "train")
    (root / "train" / "cat" / "bomb.png").write_bytes(_png_header_only(60_000, 60_000))
    with pytest.raises(DataError, match=r"bomb\.png' claims 3600000000 pixels, more than the limit"):
        load_dataset(str(root), "train")


def test_counts_and_file_sizes_bounded(tmp_path):
    root = _folder(tmp_path / "c", n=(4, 1))
    with pytest.raises(DataError, match="more than the 5 allowed"):
        load_dataset(str(root), "train", limits=DataLimits(max_images=5))
    with pytest.raises(DataError, match="bytes, more than the 50 allowed"):
        load_dataset(str(root), "train", limits=DataLimits(max_file_bytes=50))
    with pytest.raises(DataError, match="GiB in memory"):
        load_dataset(str(root), "train", limits=DataLimits(max_total_bytes=1000))


def test_missing_train_folder_and_bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no train/ folder"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="unknown dataset 'nothing-here'"):
        load_dataset("nothing-here")
    (tmp_path / "file.csv").write_text("1,2")
    with pytest.raises(DataError, match="neither a .npz file nor an image folder"):
        load_dataset(str(tmp_path / "file.csv"))


def test_folder_trains_a_user_model_end_to_end(tmp_path, user_model):
    """Four-channel 20x20 images in 3 classes reach a user model through load_splits unchanged."""
    root = _folder(tmp_path / "rgba", size=(20, 20))
    for p in (root / "train" / "cat").iterdir():
        _write(p, np.full((20, 20, 4), 90, np.uint8))
    s = load_splits(str(root), seed=0, resize=None, channels=4)
    c, h, _ = s.input_shape
    model = user_model("resnet_tiny", num_classes=s.num_classes, in_channels=c, image_size=h)
    assert model(s.train.images).shape == (len(s.train), 3)
    assert torch.isfinite(model(s.test.images)).all()


def test_limits_on_a_folder_sample_every_class(tmp_path):
    root = _folder(tmp_path / "l", classes=("a", "b", "c", "d"), n=(6, 6))
    s = load_splits(str(root), seed=0, train_limit=12, test_limit=12, val_fraction=0.25)
    assert len(s.train) + len(s.val) == 12 and len(s.test) == 12
    assert len(set(s.test.labels.tolist())) == 4 and len(set(s.train.labels.tolist()) | set(s.val.labels.tolist())) == 4

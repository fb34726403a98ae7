"""Training the tiny grid detector on synthetic training crops, seeded and cached by config hash.

The detector is trained on small crops (cheap on a CPU) cut from the training scenes' backgrounds
(never the held-out test backgrounds) and, being fully convolutional, then runs on full-size tiles.
Adam with a cosine learning rate, horizontal-flip augmentation, the grid loss of ``tinynet``.

Why its own step and not :func:`crosslayer.train.fit`: ``fit`` trains a classifier on labelled images
(cross-entropy, validation accuracy, best-epoch selection); the detector learns dense per-cell targets
(objectness, box offsets, class) with the grid loss, its flip augmentation must mirror the targets with the
image, and there is no validation accuracy to select an epoch by. What it shares with ``fit``: the seeding
(``seed_everything``), the progress bar (``progress``) and the training cache's format and reader / writer
(``load_cached`` / ``store_cached``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from crosslayer.config import check_range, to_mapping
from crosslayer.data.datasets import cache_dir
from crosslayer.data.scenes import CLASS_NAMES, training_crops
from crosslayer.detect.tinynet import GridSpec, TinyGridDetector, encode_targets, grid_loss
from crosslayer.train import load_cached, progress, seed_everything, store_cached

__all__ = ["DetectorTrainConfig", "TrainedDetector", "torch_threads", "train_tiny_detector"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DetectorTrainConfig:
    """Training set size (crops of ``crop_size`` px), epochs, batch size, learning rate, object sizes (px, at
    frame scale) and ``scale``: the factor the detector's mode applies to the frame (1 for tiles and whole
    frames; detector input / frame width for a resized frame), so it is trained on the sizes it will see."""

    crops: int = 4000
    crop_size: int = 256
    epochs: int = 14
    batch_size: int = 32
    lr: float = 3e-3
    min_size: int = 12
    max_size: int = 128
    scale: float = 1.0

    def validate(self) -> None:
        check_range("detector.crops", self.crops, 8, 100_000)
        check_range("detector.epochs", self.epochs, 1, 1000)
        check_range("detector.batch_size", self.batch_size, 1, 4096)
        check_range("detector.lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("detector.scale", self.scale, 0.0, 1.0, lo_open=True)
        check_range("detector.min_size", self.min_size, 3)
        check_range("detector.max_size", self.max_size, self.min_size, 540)
        check_range("detector.crop_size", self.crop_size, 2 * self.max_size * self.scale, 1080 * self.scale)
        check_range("detector.crops x crop_size^2 x 3 (bytes of training images)",
                    self.crops * self.crop_size ** 2 * 3, 1, 2 * 1024 ** 3)
        if self.crop_size % 16:
            check_range("detector.crop_size (a multiple of 16)", self.crop_size, 16 * math.ceil(self.crop_size / 16))


@dataclass
class TrainedDetector:
    model: TinyGridDetector
    train_seconds: float
    final_loss: float
    cached: bool
    path: Path | None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count. The tiny detector's
    small convolutions gain little from more threads, and on a shared, oversubscribed CPU more threads
    are many times slower (measured: 2 threads 6-9x slower than 1 on this 2-core machine under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _key(cfg: DetectorTrainConfig, spec: GridSpec, seed: int) -> str:
    payload = json.dumps({"cfg": to_mapping(cfg), "spec": to_mapping(spec), "seed": seed, "torch": torch.__version__,
                          "v": 5}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_tiny_detector(cfg: DetectorTrainConfig | None = None, *, seed: int = 0, use_cache: bool = True,
                        cache: Path | None = None, threads: int = 1) -> TrainedDetector:
    """Train (or load from the cache) a ``TinyGridDetector`` on synthetic training crops (``threads`` torch
    threads; the result is the same for any count up to floating-point summation order)."""
    cfg = cfg or DetectorTrainConfig()
    cfg.validate()
    spec = GridSpec(num_classes=len(CLASS_NAMES))
    path = (cache or cache_dir()) / "detectors" / f"tiny-{_key(cfg, spec, seed)}.pt"
    gen = seed_everything(seed)  # before building the model: its initial weights are seeded too
    model = TinyGridDetector(spec)
    meta = load_cached(path, model, "detector") if use_cache else None
    if meta is not None:
        return TrainedDetector(model.eval(), float(meta["train_seconds"]), float(meta["final_loss"]), True, path)
    images, targets = training_crops(cfg.crops, cfg.crop_size, seed=seed, min_size=cfg.min_size,
                                     max_size=cfg.max_size, scale=cfg.scale)
    x_all = torch.from_numpy(images)  # (N, H, W, 3) uint8, permuted per batch: no second copy of the set
    g = cfg.crop_size // spec.stride
    obj, box, cls = encode_targets(targets, g, g, spec)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = math.ceil(cfg.crops / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    t0, last = time.perf_counter(), float("nan")
    model.train()
    with progress() as bar, torch_threads(threads):
        task = bar.add_task("detector", total=total, info="")
        for epoch in range(cfg.epochs):
            perm = torch.randperm(cfg.crops, generator=gen)
            run, n = 0.0, 0
            for i in range(0, cfg.crops, cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                x = x_all[idx].permute(0, 3, 1, 2).float() / 255.0
                o, b, c = obj[idx], box[idx].clone(), cls[idx]
                if bool(torch.rand(1, generator=gen) < 0.5):  # horizontal flip: mirror grid and x offsets
                    x, o, b, c = x.flip(3), o.flip(2), b.flip(3), c.flip(2)
                    b[:, 0] = torch.where(o > 0.5, 1.0 - b[:, 0], b[:, 0])
                loss = grid_loss(model(x), o, b, c)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                run += float(loss.detach()) * len(idx)
                n += len(idx)
                bar.advance(task)
            last = run / max(n, 1)
            bar.update(task, info=f"epoch {epoch + 1} loss {last:.3f}")
            log.info("detector epoch %d: loss %.4f", epoch + 1, last)
    model.eval()
    seconds = time.perf_counter() - t0
    store_cached(path, model, {"train_seconds": seconds, "final_loss": last, "config": to_mapping(cfg), "seed": seed})
    return TrainedDetector(model, seconds, last, False, path)



"""Building detectors by name (``tiny``, ``hog`` or ``file.py:factory``), one per mode where the mode changes
the scale the detector sees, and the synthetic validation / held-out test sequences."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from crosslayer.data.scenes import CLASS_NAMES, TEST_BACKGROUNDS, VAL_BACKGROUNDS, SceneConfig, render_sequence
from crosslayer.detect.detectors import Detector, HOGPeopleDetector, TinyCNNDetector, load_detector
from crosslayer.detect.pipeline import Mode
from crosslayer.detect.trainer import DetectorTrainConfig, train_tiny_detector
from crosslayer.device import resolve_device

__all__ = ["TEST_SEED_OFFSET", "VAL_SEED_OFFSET", "build_detector", "build_mode_detectors", "mode_scale",
           "resize_train_config", "synthetic_sequences"]

# Scene seeds: test sequences from TEST_SEED_OFFSET + 1000 x seed, validation from VAL_SEED_OFFSET + 1000 x seed,
# on disjoint backgrounds; the detector's training crops use the training seed and TRAIN_BACKGROUNDS, so no
# validation or test frame (or background) is seen in training, and no test frame in any choice.
TEST_SEED_OFFSET = 10_000
VAL_SEED_OFFSET = 20_000

GroundTruth = tuple[NDArray[np.float32], NDArray[np.int64]]


def mode_scale(mode: Mode, tile: int, frame_size: tuple[int, int]) -> float:
    """The factor by which ``mode`` scales the frame before the detector sees it (letterbox for 'resize')."""
    return min(tile / frame_size[0], tile / frame_size[1], 1.0) if mode == "resize" else 1.0


def resize_train_config(cfg: DetectorTrainConfig, scale: float) -> DetectorTrainConfig:
    """``cfg`` for a detector that sees frames scaled by ``scale``: the same objects (frame px), the same
    crops, epochs and optimiser, crops of 128 px (at most the scaled frame height) cut from ``128 / scale``
    px of the frame and area-downscaled, as the letterboxed frame is."""
    if scale >= 1.0:
        return cfg
    crop = max(16, min(128, 16 * int(1080 * scale // 16)))
    return dataclasses.replace(cfg, scale=scale, crop_size=crop)


def build_detector(name: str, *, tile: int = 384, conf_threshold: float = 0.5, seed: int = 0,
                   train_cfg: DetectorTrainConfig | None = None, device: str = "auto",
                   use_cache: bool = True) -> Detector:
    """``tiny`` (trained on synthetic crops at ``train_cfg.scale``, cached), ``hog`` (OpenCV people detector)
    or ``file.py:factory`` (user code: it runs as code)."""
    if name == "tiny":
        trained = train_tiny_detector(train_cfg, seed=seed, use_cache=use_cache)
        return TinyCNNDetector(trained.model, CLASS_NAMES, (tile, tile), conf_threshold,
                               device=resolve_device(device))
    if name == "hog":
        return HOGPeopleDetector(input_size=(tile, tile))
    return load_detector(name)


def build_mode_detectors(name: str, modes: tuple[Mode, ...], *, frame_size: tuple[int, int], tile: int = 384,
                         conf_threshold: float = 0.5, seed: int = 0, train_cfg: DetectorTrainConfig | None = None,
                         device: str = "auto", use_cache: bool = True) -> dict[str, Detector]:
    """One detector per mode: for ``tiny``, the 'resize' mode gets a detector trained at the resized frame's
    scale (:func:`resize_train_config`) and every other mode the native-scale one; other detectors are shared."""
    cfg = train_cfg or DetectorTrainConfig()
    built: dict[float, Detector] = {}
    out: dict[str, Detector] = {}
    for m in modes:
        s = mode_scale(m, tile, frame_size) if name == "tiny" else 1.0
        if s not in built:
            built[s] = build_detector(name, tile=tile, conf_threshold=conf_threshold, seed=seed,
                                      train_cfg=resize_train_config(cfg, s), device=device, use_cache=use_cache)
        out[m] = built[s]
    return out


def synthetic_sequences(n: int, cfg: SceneConfig, *, seed: int = 0, split: Literal["test", "val"] = "test"
                        ) -> list[Callable[[], Iterator[tuple[NDArray[np.uint8], GroundTruth]]]]:
    """``n`` held-out (``test``) or validation (``val``) sequences as re-iterable makers: disjoint backgrounds,
    seeds ``TEST_SEED_OFFSET`` / ``VAL_SEED_OFFSET + 1000 x seed + i``."""
    backgrounds, offset = (TEST_BACKGROUNDS, TEST_SEED_OFFSET) if split == "test" else (VAL_BACKGROUNDS,
                                                                                      VAL_SEED_OFFSET)

    def maker(s: int) -> Callable[[], Iterator[tuple[NDArray[np.uint8], GroundTruth]]]:
        def gen() -> Iterator[tuple[NDArray[np.uint8], GroundTruth]]:
            for f in render_sequence(cfg, seed=s, backgrounds=backgrounds):
                yield f.image, (f.boxes, f.classes)
        return gen
    return [maker(offset + 1000 * seed + i) for i in range(n)]

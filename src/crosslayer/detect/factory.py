"""Building a detector by name (``tiny``, ``hog`` or ``file.py:factory``) and the held-out synthetic
sequences the evaluation uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import NDArray

from crosslayer.data.scenes import CLASS_NAMES, TEST_BACKGROUNDS, SceneConfig, render_sequence
from crosslayer.detect.detectors import Detector, HOGPeopleDetector, TinyCNNDetector, load_detector
from crosslayer.detect.trainer import DetectorTrainConfig, train_tiny_detector
from crosslayer.device import resolve_device

__all__ = ["TEST_SEED_OFFSET", "build_detector", "synthetic_sequences"]

# Held-out sequences use seeds from here on; the detector's training crops use the training seed and
# the disjoint TRAIN_BACKGROUNDS, so no test frame (or background) is seen in training.
TEST_SEED_OFFSET = 10_000

GroundTruth = tuple[NDArray[np.float32], NDArray[np.int64]]


def build_detector(name: str, *, tile: int = 384, conf_threshold: float = 0.5, seed: int = 0,
                   train_cfg: DetectorTrainConfig | None = None, device: str = "auto",
                   use_cache: bool = True) -> Detector:
    """``tiny`` (trained on synthetic crops, cached), ``hog`` (OpenCV people detector) or ``file.py:factory``."""
    if name == "tiny":
        trained = train_tiny_detector(train_cfg, seed=seed, use_cache=use_cache)
        return TinyCNNDetector(trained.model, CLASS_NAMES, (tile, tile), conf_threshold,
                               device=resolve_device(device))
    if name == "hog":
        return HOGPeopleDetector(input_size=(tile, tile))
    return load_detector(name)


def synthetic_sequences(n: int, cfg: SceneConfig, *, seed: int = 0
                        ) -> list[Callable[[], Iterator[tuple[NDArray[np.uint8], GroundTruth]]]]:
    """``n`` held-out sequences (test backgrounds, seeds ``TEST_SEED_OFFSET + seed + i``) as re-iterable makers."""
    def maker(s: int) -> Callable[[], Iterator[tuple[NDArray[np.uint8], GroundTruth]]]:
        def gen() -> Iterator[tuple[NDArray[np.uint8], GroundTruth]]:
            for f in render_sequence(cfg, seed=s, backgrounds=TEST_BACKGROUNDS):
                yield f.image, (f.boxes, f.classes)
        return gen
    return [maker(TEST_SEED_OFFSET + seed + i) for i in range(n)]

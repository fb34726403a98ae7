from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crosslayer.data.scenes import CLASS_NAMES, SceneConfig, render_sequence
from crosslayer.detect.detectors import TinyCNNDetector, run_detector
from crosslayer.detect.trainer import DetectorTrainConfig, torch_threads, train_tiny_detector
from crosslayer.errors import ConfigError

TINY = DetectorTrainConfig(crops=32, crop_size=96, epochs=1, batch_size=16, min_size=8, max_size=40)


def test_training_is_seeded_and_cached(tmp_path: Path) -> None:
    a = train_tiny_detector(TINY, seed=3, cache=tmp_path)
    assert not a.cached and a.path is not None and a.path.is_file() and np.isfinite(a.final_loss)
    b = train_tiny_detector(TINY, seed=3, cache=tmp_path)
    assert b.cached and b.path == a.path
    c = train_tiny_detector(TINY, seed=3, cache=tmp_path, use_cache=False)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
        assert torch.allclose(v.float(), c.model.state_dict()[k].float(), atol=1e-5)
    d = train_tiny_detector(TINY, seed=4, cache=tmp_path)
    assert d.path != a.path
    # the trained network runs on full-size tiles through the detector interface
    det = TinyCNNDetector(a.model, CLASS_NAMES, (192, 192), conf_threshold=0.05)
    frame = next(iter(render_sequence(SceneConfig(width=384, height=192, num_frames=1, num_objects=3,
                                                  cluster_radius=40, max_size=40), seed=1))).image
    out = run_detector(det, np.stack([frame[:, :192], frame[:, 192:]]))
    assert len(out) == 2 and all(d.boxes.shape[1] == 4 for d in out)
    assert torch.get_num_threads() >= 1


def test_torch_threads_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_train_config_validation() -> None:
    with pytest.raises(ConfigError, match="crops"):
        DetectorTrainConfig(crops=0).validate()
    with pytest.raises(ConfigError, match="crop_size"):
        DetectorTrainConfig(crop_size=100).validate()
    with pytest.raises(ConfigError, match="lr"):
        DetectorTrainConfig(lr=0).validate()
    with pytest.raises(ConfigError, match="bytes of training images"):  # 100,000 crops of 1,024 px: 315 GB
        DetectorTrainConfig(crops=100_000, crop_size=1024).validate()
    with pytest.raises(ConfigError, match="crop_size"):  # a resized-scale detector's crop covers crop / scale px
        DetectorTrainConfig(scale=0.2, crop_size=256).validate()
    DetectorTrainConfig(scale=0.2, crop_size=128).validate()

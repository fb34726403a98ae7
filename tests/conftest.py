"""Shared fixtures: the offline data and small trained models, trained once per session (and cached
on disk by the training loop's cache, so later sessions reuse them)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from torch import nn

os.environ.setdefault("CROSSLAYER_NO_PROGRESS", "1")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "CROSSLAYER_DATA" not in os.environ and (_SHARED / "mnist").is_dir():
    os.environ["CROSSLAYER_DATA"] = str(_SHARED)

from crosslayer.data import DataSplits, load_splits  # noqa: E402
from crosslayer.models import build_model  # noqa: E402
from crosslayer.train import TrainConfig, fit_cached, seed_everything  # noqa: E402

# Real data: the 10k MNIST training subset (9,000 train / 1,000 validation) and the first 2,000 test images.
TRAIN_LIMIT, TEST_LIMIT = 10000, 2000
QUICK_TRAIN = TrainConfig(epochs=4, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("CROSSLAYER_DATA")
    if not d or not Path(d).is_dir():
        pytest.skip("no offline data folder (set CROSSLAYER_DATA)")
    return Path(d)


@pytest.fixture(scope="session")
def mnist_small(data_dir: Path) -> DataSplits:
    """MNIST: 9,000 train / 1,000 validation / 2,000 test images."""
    return load_splits("mnist", str(data_dir), train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT, seed=0)


def _trained(name: str, data: DataSplits) -> nn.Module:
    seed_everything(0)  # the initial weights must not depend on which tests ran before this fixture
    model = build_model(name)
    fit_cached(name, model, data.train, data.val, QUICK_TRAIN, seed=0, desc=f"fixture {name}")
    return model.eval()


@pytest.fixture(scope="session")
def _lenet5_session(mnist_small: DataSplits) -> nn.Module:
    return _trained("lenet5", mnist_small)


@pytest.fixture(scope="session")
def _lenet300_session(mnist_small: DataSplits) -> nn.Module:
    return _trained("lenet300", mnist_small)


@pytest.fixture
def lenet5_trained(_lenet5_session: nn.Module) -> nn.Module:
    """A LeNet-5 trained for 4 epochs on the small MNIST split (about 98 % test accuracy); a fresh copy per test."""
    return copy.deepcopy(_lenet5_session)


@pytest.fixture
def lenet300_trained(_lenet300_session: nn.Module) -> nn.Module:
    """A LeNet-300-100 trained on the small MNIST split; a fresh copy per test."""
    return copy.deepcopy(_lenet300_session)


# User-style models (tests/user_models.py): ResNet with BN + residual adds, MobileNet with depthwise / ReLU6 /
# squeeze-and-excitation / hard-swish, an attention block with GELU / LayerNorm, a CNN with functional ops.
# Names and file: user_models.USER_MODEL_NAMES, user_models.USER_MODELS_FILE (import them from `user_models`).


@pytest.fixture
def user_model():
    """A builder of the user-style models by name: ``user_model("resnet_tiny", num_classes=3, in_channels=3,
    image_size=32, seed=0)``; as a CLI / flow model: ``f"{user_models.USER_MODELS_FILE}:resnet_tiny"``."""
    from user_models import build_user_model

    return build_user_model

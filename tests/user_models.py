"""Small user-style models, as users bring them: the layer kinds edge engineers deploy, not LeNet.

Each factory takes ``num_classes``, ``in_channels`` and ``image_size`` keyword arguments (defaults for
MNIST: 10, 1, 28) and a ``seed`` for its initial weights, and is tiny enough to train a step or run a
batch in well under a second on CPU. Every factory is also a user model for the CLI and the flow:

    crosslayer train --model tests/user_models.py:resnet_tiny ...
    build_model("tests/user_models.py:mobilenet_tiny", num_classes=10, in_channels=1, image_size=28)

- ``resnet_tiny``: BatchNorm and residual adds (He et al., CVPR 2016), one projection shortcut (1x1 conv + BN).
- ``mobilenet_tiny``: depthwise-separable inverted residuals with ReLU6 (Sandler et al., CVPR 2018), a
  squeeze-and-excitation block (Hu et al., CVPR 2018; an elementwise multiply) and hard-swish (Howard
  et al., ICCV 2019).
- ``attention_mlp``: a transformer-style encoder block on patch tokens (Dosovitskiy et al., ICLR 2021):
  ``Linear(bias=False)`` embedding, LayerNorm, ``nn.MultiheadAttention``, a GELU MLP, residual adds.
- ``functional_cnn``: functional ops in ``forward`` (``F.relu``, ``F.max_pool2d``, ``torch.cat`` of two
  branches, ``F.adaptive_avg_pool2d``, ``x.view(x.size(0), -1)``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["USER_MODELS", "USER_MODELS_FILE", "USER_MODEL_NAMES", "attention_mlp", "build_user_model", "functional_cnn",
           "mobilenet_tiny", "resnet_tiny"]


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with initial weights drawn from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


# --- (a) ResNet-style: BatchNorm and residual adds -------------------------------------------------------------

class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetTiny(nn.Module):
    """Stem conv 8 + BN, an identity block at 8 channels, a stride-2 block to 16 with a projection shortcut,
    global average pooling, a linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block1 = _BasicBlock(8, 8, 1)
        self.block2 = _BasicBlock(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_tiny(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, seed: int = 0) -> nn.Module:
    """(a) a ResNet-style net with BatchNorm and residual adds."""
    return _seeded(seed, lambda: ResNetTiny(num_classes, in_channels, image_size))


# --- (b) MobileNet-style: depthwise separable, ReLU6, squeeze-and-excitation, hard-swish ---------------------

class _SqueezeExcite(nn.Module):
    """Channel attention: global pool, 1x1 reduce, ReLU, 1x1 expand, hard-sigmoid gate, elementwise multiply."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, se: bool) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = nn.Sequential(nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                       nn.BatchNorm2d(hidden), nn.ReLU6())
        self.se: nn.Module = _SqueezeExcite(hidden, max(4, hidden // 4)) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out


class MobileNetTiny(nn.Module):
    """Stem conv 8 + BN + ReLU6, a depthwise-separable block (depthwise 3x3 + pointwise), two inverted
    residuals (one with squeeze-and-excitation, one with a residual add), a 1x1 head with hard-swish."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.separable = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                                       nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12))
        self.block1 = _InvertedResidual(12, 16, 2, expand=2, se=True)
        self.block2 = _InvertedResidual(16, 16, 1, expand=2, se=False)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.separable(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))


def mobilenet_tiny(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, seed: int = 0) -> nn.Module:
    """(b) a MobileNet-style net: depthwise-separable blocks, ReLU6, squeeze-and-excitation, hard-swish."""
    return _seeded(seed, lambda: MobileNetTiny(num_classes, in_channels, image_size))


# --- (c) transformer-ish: patch tokens, LayerNorm, multi-head attention, GELU MLP ---------------------------

class AttentionMLP(nn.Module):
    """Patch embedding (``Linear(bias=False)``), a learned position embedding, one pre-norm encoder block
    (LayerNorm, 2-head ``nn.MultiheadAttention``, residual add; LayerNorm, GELU MLP, residual add), mean over
    tokens, LayerNorm and a bias-free linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, dim: int = 32) -> None:
        super().__init__()
        self.patch = 4 if image_size % 4 == 0 else 1
        tokens = (image_size // self.patch) ** 2
        self.embed = nn.Linear(in_channels * self.patch * self.patch, dim, bias=False)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm_out = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        n, c, h, w = x.shape
        t = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)
        t = self.embed(t) + self.pos
        q = self.norm1(t)
        t = t + self.attn(q, q, q, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return self.head(self.norm_out(t.mean(dim=1)))


def attention_mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, seed: int = 0) -> nn.Module:
    """(c) a transformer-ish block: GELU, LayerNorm, ``nn.MultiheadAttention``, ``Linear(bias=False)``."""
    return _seeded(seed, lambda: AttentionMLP(num_classes, in_channels, image_size))


# --- (d) functional ops in forward ------------------------------------------------------------------------------

class FunctionalCNN(nn.Module):
    """conv 8 -> ``F.relu`` -> ``F.max_pool2d``; two branches (3x3 and 1x1 conv) joined by ``torch.cat``;
    ``F.max_pool2d``; ``F.adaptive_avg_pool2d`` to 2x2; ``x.view(x.size(0), -1)``; two linear layers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.branch3 = nn.Conv2d(8, 8, 3, padding=1)
        self.branch1 = nn.Conv2d(8, 8, 1)
        self.fc1 = nn.Linear(16 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.cat([F.relu(self.branch3(x)), F.relu(self.branch1(x))], dim=1)
        x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


def functional_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, seed: int = 0) -> nn.Module:
    """(d) a CNN with functional ops in ``forward``: F.relu, F.max_pool2d, torch.cat, F.adaptive_avg_pool2d, view."""
    return _seeded(seed, lambda: FunctionalCNN(num_classes, in_channels, image_size))


USER_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet_tiny": resnet_tiny,
    "mobilenet_tiny": mobilenet_tiny,
    "attention_mlp": attention_mlp,
    "functional_cnn": functional_cnn,
}


USER_MODEL_NAMES: tuple[str, ...] = tuple(USER_MODELS)
USER_MODELS_FILE: Path = Path(__file__).resolve()


def build_user_model(name: str, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                     seed: int = 0) -> nn.Module:
    """One of :data:`USER_MODELS` by name."""
    if name not in USER_MODELS:
        raise KeyError(f"unknown user model {name!r}; choose one of {', '.join(USER_MODELS)}")
    return USER_MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size, seed=seed)

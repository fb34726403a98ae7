"""MobileNetV2: Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018 (table 2), with its width multiplier.

Inverted residual blocks: 1x1 expansion (factor t) + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1 linear
projection + BN, a residual add when the stride is 1 and the width is unchanged. The body follows table 2
(t, c, n, s): (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
(6, 320, 1, 1), between a 3x3 stem conv with 32 filters and a 1x1 conv to 1280 channels, global average
pooling, dropout 0.2 and a linear classifier. The width multiplier scales every layer's channels (rounded to
a multiple of 8, as the paper's reference code does) except the last conv, which keeps 1280 for
multipliers below 1 (paper, section 5.1).

Small images: the ImageNet network halves the resolution five times (stem, and the first block of the 24-,
32-, 64- and 160-channel stages) for a total stride of 32, which would leave a 28x28 image with a 1x1 map
after the third stage. Here the number of halvings is ``round(log2(image_size / 4))`` clamped to [0, 5], so
the last feature map is about 4x4, and the network keeps its *first* halvings while the later stride-2
blocks become stride 1: the output-stride reduction the paper uses for segmentation (section 6.3, there
with atrous convolution; here without). For 28x28 or 32x32 images the stem, the 24- and the 32-channel
stages halve (28 -> 14 -> 7 -> 4) and the 64- to 320-channel stages run at 4x4; for 224x224 images the
network is the ImageNet one. Keeping the early halvings keeps the cost low (the expanded early layers at full
resolution would cost about 5x more time per image on a CPU for the same depth). ``downsample`` overrides
the count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from crosslayer.errors import ModelError
from crosslayer.models.normalize import Normalize

__all__ = ["InvertedResidual", "MobileNetV2", "make_divisible", "stride_plan"]

# (expansion t, output channels c, repeats n, stride s) of the paper's table 2.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10 % below it."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def stride_plan(image_size: int, downsample: int | None = None) -> tuple[int, ...]:
    """Strides of the five places where the ImageNet network halves (stem and table 2's stride-2 stages,
    in order), keeping only the first ``downsample`` halvings (default ``round(log2(image_size / 4))``)."""
    k = round(math.log2(max(image_size, 1) / 4)) if downsample is None else downsample
    k = min(5, max(0, k))
    return tuple([2] * k + [1] * (5 - k))


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise (3x3) - project (1x1, linear), with a residual add when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018) sized by the data, with width multiplier ``width``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, *, width: float = 1.0,
                 downsample: int | None = None, dropout: float = 0.2, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        if not (math.isfinite(width) and 0.1 <= width <= 4.0):
            raise ModelError(f"MobileNetV2 width multiplier must be in [0.1, 4], got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"MobileNetV2 dropout must be in [0, 1), got {dropout}")
        if image_size < 1 or in_channels < 1 or num_classes < 2:
            raise ModelError(f"MobileNetV2 needs image_size >= 1, in_channels >= 1 and num_classes >= 2, got "
                             f"{image_size}, {in_channels}, {num_classes}")
        strides = stride_plan(image_size, downsample)
        self.normalize = Normalize(in_channels, mean, std)
        c = make_divisible(32 * width)
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, c, 3, strides[0], 1, bias=False),
                                                 nn.BatchNorm2d(c), nn.ReLU6(inplace=True))]
        halving = iter(strides[1:])
        for t, ch, n, s in _SETTINGS:
            out = make_divisible(ch * width)
            stride = next(halving) if s == 2 else 1
            for i in range(n):
                layers.append(InvertedResidual(c, out, stride if i == 0 else 1, t))
                c = out
        last = make_divisible(1280 * max(1.0, width))
        layers.append(nn.Sequential(nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))
        return self.classifier(torch.flatten(self.pool(x), 1))

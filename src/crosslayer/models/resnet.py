"""ResNet-20 for small images: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, section 4.2 (the CIFAR-10 networks, 6n+2 layers with n = 3).

A 3x3 stem conv with 16 filters, then three stages of n = 3 basic blocks (two 3x3 convs with batch-norm,
a residual add, ReLU) with 16, 32 and 64 filters on feature maps of side s, s/2 and s/4, global average
pooling and a fully connected classifier: 19 convs + 1 linear layer.

Shortcuts where the shape changes (the first block of stages 2 and 3): option **B** by default, a 1x1
stride-2 convolution with batch-norm (the paper's projection shortcut), so that every operation is a module
with weights that pruning, export and the cost model see; 0.27 M weights. Option **A** (the paper's CIFAR
choice: subsample by 2 and zero-pad the new channels, parameter-free) is available with ``shortcut="A"``.
The network is fully convolutional, so ``image_size`` only needs to be at least 4; it does not change the
weights. Initialisation: Kaiming-normal convs (He et al., ICCV 2015), BN weight 1 / bias 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from crosslayer.errors import ModelError
from crosslayer.models.normalize import Normalize

__all__ = ["BasicBlock", "ResNet20", "ZeroPadShortcut"]


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: keep every ``stride``-th pixel and zero-pad the extra channels (no weights)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: Literal["A", "B"]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = (ZeroPadShortcut(c_in, c_out, stride) if shortcut == "A" else
                             nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 (He et al., 2016) sized by the data: ``in_channels`` input channels, ``num_classes`` outputs.

    ``depth`` = 6n + 2 gives the family (20, 32, 44, 56, 110); ``mean`` / ``std`` set the input
    normalisation (see :mod:`crosslayer.models.normalize`).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, *, depth: int = 20,
                 shortcut: Literal["A", "B"] = "B", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ModelError(f"ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        if shortcut not in ("A", "B"):
            raise ModelError(f"ResNet shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")
        if image_size < 4 or in_channels < 1 or num_classes < 2:
            raise ModelError(f"ResNet-20 needs image_size >= 4, in_channels >= 1 and num_classes >= 2, got "
                             f"{image_size}, {in_channels}, {num_classes}")
        n = (depth - 2) // 6
        self.normalize = Normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        c = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [BasicBlock(c if i == 0 else width, width, stride if i == 0 else 1, shortcut) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            c = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))

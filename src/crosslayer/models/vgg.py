"""A small VGG-style CNN (Simonyan & Zisserman, ICLR 2015): 3x3 conv + batch-norm + ReLU blocks."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallVGG"]


class SmallVGG(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-fc128-fc(num_classes), batch-norm after each conv."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 widths: tuple[int, ...] = (32, 32, 64, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        side = image_size // (2 ** (len(widths) // 2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, 128), nn.ReLU(inplace=True),
                                        nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

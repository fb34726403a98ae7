"""Fixtures of the weight-memory tests: a user-style network (residual block with BatchNorm, depthwise conv
with ReLU6, squeeze-and-excitation, GELU / LayerNorm, attention, functional pooling and reshaping)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F


class _SE(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(ch, ch // 2), nn.Linear(ch // 2, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3))
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))[:, :, None, None]


class UserNet(nn.Module):
    """28x28x1 -> 10 classes, with the building blocks of common edge models."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.res = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.se = _SE(16)
        self.proj = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.stem(x)))
        x = F.relu(x + self.bn2(self.res(x)))                  # residual add with BatchNorm
        x = F.relu6(self.pw(F.relu6(self.dw(x))))              # depthwise + pointwise, ReLU6
        x = F.max_pool2d(self.se(x), 4)                        # functional pooling: 7x7
        t = x.flatten(2).transpose(1, 2)                       # (N, 49, 16) tokens
        t = self.norm(F.gelu(self.proj(t)))
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t.reshape(t.size(0), -1))             # x.view(x.size(0), -1) style


@pytest.fixture
def user_net() -> nn.Module:
    torch.manual_seed(0)
    return UserNet().eval()

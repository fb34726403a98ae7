"""Small user-style models for the fault-campaign and approximate-emulation tests: residual adds with
BatchNorm, depthwise and grouped convs with ReLU6, a squeeze-and-excitation block, token attention with
LayerNorm / GELU, and functional ops in ``forward`` (``F.max_pool2d``, ``x.view(x.size(0), -1)``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class UserNet(nn.Module):
    """Input (N, 3, 8, 8), 10 logits. ``inplace``: the activations modify their input (as torchvision's do)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.act1 = nn.ReLU(inplace=inplace)
        self.act2 = nn.ReLU6(inplace=inplace)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.res = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.grouped = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=3)
        self.se_down = nn.Linear(12, 4)
        self.se_up = nn.Linear(4, 12)
        self.norm = nn.LayerNorm(12)
        self.q = nn.Linear(12, 12)
        self.k = nn.Linear(12, 12)
        self.v = nn.Linear(12, 12)
        self.mlp = nn.Linear(12, 16)
        self.act = nn.GELU()
        self.head = nn.Linear(4 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.stem(x)))
        x = torch.relu(x + self.bn2(self.res(x)))
        x = self.pw(self.act2(self.dw(x)))
        x = self.grouped(x)
        s = torch.sigmoid(self.se_up(torch.relu(self.se_down(x.mean((2, 3))))))
        x = F.max_pool2d(x * s[:, :, None, None], 2)
        t = self.norm(x.flatten(2).transpose(1, 2))  # (N, 4 tokens, 12)
        att = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) / 12**0.5, dim=-1)
        t = t + att @ self.v(t)
        t = self.act(self.mlp(t))
        return self.head(t.reshape(t.size(0), -1).view(t.size(0), -1))


class PlainCNN(nn.Module):
    """A sequential CNN ending in Linear layers (certifiable chains): conv-BN-ReLU, max-pool, functional
    average pool, ``x.view(x.size(0), -1)``, GELU; input (N, 3, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.fc1 = nn.Linear(12 * 2 * 2, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn(self.c1(x))), 2)
        x = F.avg_pool2d(torch.relu(self.c2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.gelu(self.fc1(x)))


def user_net(seed: int = 0, inplace: bool = False, cls: type[nn.Module] = UserNet) -> nn.Module:
    """A user-style model with seeded weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = cls(inplace) if cls is UserNet else cls()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 3, 8, 8))
    return net.eval()

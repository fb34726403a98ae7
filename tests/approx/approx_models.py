"""Small user-style models for the approximate-emulation tests: residual adds with BatchNorm, depthwise
and grouped convs with ReLU6, a squeeze-and-excitation block, token attention with LayerNorm / GELU,
and functional ops in ``forward`` (``F.max_pool2d``, ``x.view(x.size(0), -1)``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class UserNet(nn.Module):
    """Input (N, 3, 8, 8), 10 logits."""

    def __init__(self) -> None:
        super().__init__()
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
        x = torch.relu(self.bn1(self.stem(x)))
        x = torch.relu(x + self.bn2(self.res(x)))
        x = self.pw(F.relu6(self.dw(x)))
        x = self.grouped(x)
        s = torch.sigmoid(self.se_up(torch.relu(self.se_down(x.mean((2, 3))))))
        x = F.max_pool2d(x * s[:, :, None, None], 2)
        t = self.norm(x.flatten(2).transpose(1, 2))  # (N, 4 tokens, 12)
        att = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) / 12**0.5, dim=-1)
        t = t + att @ self.v(t)
        t = self.act(self.mlp(t))
        return self.head(t.reshape(t.size(0), -1).view(t.size(0), -1))


def user_net(seed: int = 0) -> nn.Module:
    """A :class:`UserNet` with seeded weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = UserNet()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 3, 8, 8))
    return net.eval()

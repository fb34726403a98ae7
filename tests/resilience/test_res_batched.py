"""The batched rank-one fault evaluation equals patching the weight and running the whole model."""

from __future__ import annotations

import torch
from torch import nn

from crosslayer.resilience import FLOAT32, correct_counts, fault_correct_counts, random_fault_sites, stored_weights


def test_batched_equals_direct_float(lenet5_trained: nn.Module, subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    g = torch.Generator().manual_seed(3)
    changed = 0
    with stored_weights(lenet5_trained) as lw:
        for name, w in lw.items():
            idx, bit = random_fault_sites(w.weight.numel(), w.fmt, 4, g, bits=(30, 29))
            vals = w.faulty_values(idx, bit)
            fast = fault_correct_counts(lenet5_trained, name, idx, vals, x, y, budget_elems=1 << 16)
            ref = fault_correct_counts(lenet5_trained, name, idx, vals, x, y, method="direct")
            assert torch.equal(fast, ref), name
            changed += int((fast != correct_counts(lenet5_trained, x, y)).sum())
    assert changed > 0  # exponent-MSB flips must hurt some faults


def test_batched_equals_direct_int8(lenet5_int8: nn.Module, subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    g = torch.Generator().manual_seed(4)
    with stored_weights(lenet5_int8, ["conv1", "fc1"]) as lw:
        for name, w in lw.items():
            idx, bit = random_fault_sites(w.weight.numel(), w.fmt, 4, g, bits=(7, 6))
            vals = w.faulty_values(idx, bit)
            fast = fault_correct_counts(lenet5_int8, name, idx, vals, x, y)
            ref = fault_correct_counts(lenet5_int8, name, idx, vals, x, y, method="direct")
            assert torch.equal(fast, ref), name


class _Odd(nn.Module):
    """Strided, padded, dilated and grouped convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.b = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)
        self.fc = nn.Linear(6 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.b(torch.relu(self.a(x)))), 1))


def test_batched_conv_geometry() -> None:
    torch.manual_seed(0)
    m = _Odd().eval()
    x = torch.rand(40, 1, 28, 28)
    y = m(x).argmax(1)  # labels = clean predictions: every fault can only lower the count
    g = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        w = m.get_submodule(name).weight
        idx, _ = random_fault_sites(w.numel(), FLOAT32, 8, g)
        vals = torch.randn(8, generator=g) * 5
        fast = fault_correct_counts(m, name, idx, vals, x, y)
        ref = fault_correct_counts(m, name, idx, vals, x, y, method="direct")
        assert torch.equal(fast, ref), name
        assert int(fast.min()) < 40

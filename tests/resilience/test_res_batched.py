"""The batched rank-one fault evaluation equals patching the weight and running the whole model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.resilience import (
    FLOAT32,
    campaign_correct_counts,
    correct_counts,
    fault_correct_counts,
    random_fault_sites,
    stored_weights,
)


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
        w: torch.Tensor = m.get_submodule(name).weight  # type: ignore[assignment]
        idx, _ = random_fault_sites(w.numel(), FLOAT32, 8, g)
        vals = torch.randn(8, generator=g) * 5
        fast = fault_correct_counts(m, name, idx, vals, x, y)
        ref = fault_correct_counts(m, name, idx, vals, x, y, method="direct")
        assert torch.equal(fast, ref), name
        assert int(fast.min()) < 40


def _direct(m: nn.Module, faults: dict[str, tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
            y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {n: fault_correct_counts(m, n, i, v, x, y, method="direct") for n, (i, v) in faults.items()}


@pytest.mark.parametrize(("fixture", "bits"), [("lenet5_trained", (30, 29, 23)), ("lenet5_int8", (7, 6))])
def test_campaign_counts_equal_direct(fixture: str, bits: tuple[int, ...], request: pytest.FixtureRequest,
                                      subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One clean pass + suffix-only evaluation of faults in every layer equals patching and a full run."""
    x, y = subset
    model = request.getfixturevalue(fixture)
    g = torch.Generator().manual_seed(5)
    with stored_weights(model) as lw:
        faults = {}
        for name, w in lw.items():
            idx, bit = random_fault_sites(w.weight.numel(), w.fmt, 5, g, bits=bits)
            faults[name] = (idx, w.faulty_values(idx, bit))
        clean, fast = campaign_correct_counts(model, faults, x, y, budget_elems=1 << 18, max_faults_per_pass=3)
        assert clean == correct_counts(model, x, y)
        ref = _direct(model, faults, x, y)
        for name in faults:
            assert torch.equal(fast[name], ref[name]), name
    if fixture == "lenet5_trained":
        assert any(int(c.min()) < clean for c in fast.values())  # exponent-MSB flips must hurt some faults


class _Skip(nn.Module):
    """A skip connection: the suffix after ``b`` also reads the output of ``a`` (a live value)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.fc(torch.flatten(torch.relu(self.b(h)) + h, 1))


class _Branchy(_Skip):
    """Data-dependent control flow: not traceable, so the per-layer path is used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if float(h.detach().mean()) > 1e9:
            h = h * 0
        return self.fc(torch.flatten(torch.relu(self.b(h)) + h, 1))


def test_campaign_counts_skip_and_untraceable() -> None:
    torch.manual_seed(1)
    x = torch.rand(30, 1, 28, 28)
    for cls in (_Skip, _Branchy):
        m = cls().eval()
        y = m(x).argmax(1)
        g = torch.Generator().manual_seed(2)
        faults = {}
        for name in ("a", "b", "fc"):
            w: torch.Tensor = m.get_submodule(name).weight  # type: ignore[assignment]
            idx, _ = random_fault_sites(w.numel(), FLOAT32, 6, g)
            faults[name] = (idx, torch.randn(6, generator=g) * 20)
        clean, fast = campaign_correct_counts(m, faults, x, y)
        assert clean == 30
        ref = _direct(m, faults, x, y)
        for name in faults:
            assert torch.equal(fast[name], ref[name]), (cls.__name__, name)
        assert min(int(c.min()) for c in fast.values()) < 30

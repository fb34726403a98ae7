"""Magnitude masks of the three schemes: exact counts, thresholds, monotonicity and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from crosslayer.errors import ConfigError, StageError
from crosslayer.prune import (
    apply_masks,
    blind_masks,
    distribution_masks,
    lambda_for_sparsity,
    layer_sparsity,
    magnitude_masks,
    mask_sparsity,
    prunable_weights,
    uniform_masks,
)
from crosslayer.train import TrainConfig, fit


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(20, 30, generator=g), "b.weight": 3.0 * torch.randn(8, 4, 3, 3, generator=g),
            "c.weight": 0.1 * torch.randn(10, 50, generator=g)}


def test_class_blind_uses_one_global_threshold() -> None:
    w = _weights()
    masks = blind_masks(w, 0.7)
    n = sum(t.numel() for t in w.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.7 * n)
    kept_min = min(float(w[k][m].abs().min()) for k, m in masks.items() if m.any())
    pruned_max = max(float(w[k][~m].abs().max()) for k, m in masks.items() if (~m).any())
    assert pruned_max <= kept_min
    # the small-magnitude layer loses far more than the large one: class-blind is not uniform
    ls = layer_sparsity(masks)
    assert ls["c.weight"] > 0.95 and ls["b.weight"] < 0.6


def test_class_uniform_prunes_the_same_fraction_per_layer() -> None:
    w = _weights()
    masks = uniform_masks(w, 0.6)
    for k, m in masks.items():
        assert int((~m).sum()) == round(0.6 * w[k].numel())
        assert float(w[k][~m].abs().max()) <= float(w[k][m].abs().min())


def test_class_distribution_threshold_is_lambda_times_std() -> None:
    w = _weights()
    masks = distribution_masks(w, 0.5)
    for k, m in masks.items():
        thr = 0.5 * float(w[k].std())
        assert torch.equal(m, w[k].abs() > thr)


def test_lambda_for_sparsity_hits_the_target() -> None:
    w = _weights()
    lam = lambda_for_sparsity(w, 0.8)
    s = mask_sparsity(distribution_masks(w, lam))
    assert 0.8 <= s < 0.8 + 2.0 / sum(t.numel() for t in w.values()) + 1e-3
    masks, lam2 = magnitude_masks(w, "class-distribution", 0.8)
    assert lam2 == pytest.approx(lam) and mask_sparsity(masks) == pytest.approx(s)


@pytest.mark.parametrize("scheme", ["class-blind", "class-uniform", "class-distribution"])
def test_masks_only_shrink_when_sparsity_grows(scheme: str) -> None:
    w = _weights(1)
    m1, _ = magnitude_masks(w, scheme, 0.5)
    w2 = {k: v * m1[k] + 0.01 * torch.randn_like(v) * m1[k] for k, v in w.items()}  # fine-tuned survivors
    m2, _ = magnitude_masks(w2, scheme, 0.8, prev=m1)
    assert all(not bool((m2[k] & ~m1[k]).any()) for k in w)
    assert mask_sparsity(m2) >= 0.8 - 1e-3


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 400), st.floats(0.0, 0.99), st.integers(0, 10_000))
def test_blind_prunes_exactly_round_s_n(n: int, s: float, seed: int) -> None:
    w = {"x.weight": torch.randn(n, generator=torch.Generator().manual_seed(seed))}
    assert int((~blind_masks(w, s)["x.weight"]).sum()) == round(s * n)


def test_prunable_weights_and_layer_errors() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))
    assert list(prunable_weights(net)) == ["0.weight", "3.weight"]
    assert list(prunable_weights(net, ["3"])) == ["3.weight"]
    with pytest.raises(ConfigError, match=r"'fc9'.*allowed: 0, 3"):
        prunable_weights(net, ["fc9"])
    with pytest.raises(StageError, match="no prunable layers"):
        prunable_weights(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_out_of_range(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"sparsity = .* out of range; allowed \[0, 1\)"):
        blind_masks(_weights(), bad)


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="class-blind"):
        magnitude_masks(_weights(), "random", 0.5)


def test_masks_survive_fine_tuning(lenet300_trained: nn.Module, mnist_small) -> None:  # type: ignore[no-untyped-def]
    net = lenet300_trained
    masks, _ = magnitude_masks(prunable_weights(net), "class-blind", 0.9)
    apply_masks(net, masks)
    train = mnist_small.train.subset(640)
    fit(net, train, mnist_small.val.subset(100), TrainConfig(epochs=1, lr=0.01), seed=0,
        on_step=lambda m: apply_masks(m, masks))
    params = dict(net.named_parameters())
    for k, m in masks.items():
        assert bool((params[k][~m] == 0).all())
        assert bool((params[k][m] != 0).float().mean() > 0.99)
    with pytest.raises(StageError, match="shape"):
        apply_masks(net, {"fc1.weight": torch.ones(3, dtype=torch.bool)})

"""Variation-aware training: seeded noisy loss, straight-through gradients, robustness gained."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.imc import AwareTrainConfig, CrossbarSpec, noisy_loss, train_variation_aware
from crosslayer.imc.evaluation import crossbar_accuracy


def test_noisy_loss_is_seeded_and_straight_through() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(10, 1, 4, 4), torch.randint(0, 3, (10,))
    spec = CrossbarSpec(d2d_sigma=0.5)
    l1 = noisy_loss(spec, seed=4)(net, x, y)
    l2 = noisy_loss(spec, seed=4)(net, x, y)
    clean = nn.functional.cross_entropy(net(x), y)
    assert float(l1.detach()) == float(l2.detach())
    assert float(l1.detach()) != pytest.approx(float(clean.detach()), abs=1e-6)
    l1.backward()
    assert net[1].weight.grad is not None and float(net[1].weight.grad.abs().sum()) > 0
    # the clean weights are not modified by the noisy forward pass
    assert float(nn.functional.cross_entropy(net(x), y).detach()) == pytest.approx(float(clean.detach()))


@pytest.mark.slow
def test_variation_aware_training_improves_noisy_accuracy(lenet5_trained: nn.Module, mnist_small) -> None:
    spec = CrossbarSpec(d2d_sigma=0.8)
    train = mnist_small.train.subset(3000)
    aware, res = train_variation_aware(lenet5_trained, train, mnist_small.val, spec, AwareTrainConfig(epochs=1),
                                       seed=0)
    assert len(res.history) == 1
    test = mnist_small.test.subset(500)
    seeds = [0, 1, 2]
    std = sum(crossbar_accuracy(lenet5_trained, spec, test, seeds=seeds)) / 3
    aw = sum(crossbar_accuracy(aware, spec, test, seeds=seeds)) / 3
    assert aw > std + 0.02


def test_augment_shift_reaches_the_training_loop() -> None:
    """With the same seed, a shift-augmented fine-tuning sees other images, so it ends elsewhere."""
    from crosslayer.data.datasets import ImageDataset

    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 8, 8, generator=g)
    labels = torch.randint(0, 3, (64,), generator=g)
    data = ImageDataset("toy", "train", images, labels, ("a", "b", "c"), "random")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    spec = CrossbarSpec(d2d_sigma=0.1)
    plain, _ = train_variation_aware(net, data, data, spec, AwareTrainConfig(epochs=1, batch_size=32), seed=0)
    again, _ = train_variation_aware(net, data, data, spec, AwareTrainConfig(epochs=1, batch_size=32), seed=0)
    shifted, _ = train_variation_aware(net, data, data, spec,
                                       AwareTrainConfig(epochs=1, batch_size=32, augment_shift=2), seed=0)
    assert torch.equal(plain[1].weight, again[1].weight)
    assert not torch.allclose(plain[1].weight, shifted[1].weight)

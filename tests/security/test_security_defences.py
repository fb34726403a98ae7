import pytest
import torch
from torch import nn

from crosslayer.errors import ConfigError
from crosslayer.security import (
    Defended,
    InputQuantization,
    LowPassFilter,
    MedianFilter,
    PGDConfig,
    adversarial_loss,
    adversarial_train,
    bpda,
    evaluate_defence,
    learn_thresholds,
)
from crosslayer.train import TrainConfig, evaluate


def test_quantization_levels_and_bpda_gradient() -> None:
    q = InputQuantization(3)
    x = torch.tensor([[[[0.0, 0.2, 0.3, 0.6, 0.8, 1.0]]]])
    assert q(x).flatten().tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    xr = x.clone().requires_grad_(True)
    assert not q(xr).requires_grad  # no gradient through the staircase: gradient masking without BPDA
    with bpda(q):
        xr2 = x.clone().requires_grad_(True)
        (q(xr2) * 2).sum().backward()
    assert xr2.grad is not None and torch.equal(xr2.grad, torch.full_like(x, 2.0))  # identity backward
    assert q.bpda is False  # the context manager restored the flag
    with pytest.raises(ConfigError, match="levels"):
        InputQuantization(1)


def test_dithered_quantization_is_random_but_seeded() -> None:
    x = torch.full((1, 1, 8, 8), 0.5)
    a, b = InputQuantization(2, dither=0.2, seed=3), InputQuantization(2, dither=0.2, seed=3)
    assert a.random and torch.equal(a(x), b(x))
    assert 0 < float(a(x).mean()) < 1


def test_filters() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0  # salt noise
    assert float(MedianFilter(3)(x).abs().max()) == 0.0
    const = torch.full((1, 1, 9, 9), 0.7)
    assert torch.allclose(LowPassFilter(3, 1.0)(const), const, atol=1e-6)
    blurred = LowPassFilter(3, 1.0)(x)
    assert float(blurred.max()) < 1.0 and float(blurred.sum()) > 0.99
    with pytest.raises(ConfigError, match="odd"):
        MedianFilter(2)


def test_adaptive_attack_beats_nonadaptive_estimate(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch
    # eps 0.4: a perturbation that can push a pixel across the binarisation threshold (at eps 0.3 a black or
    # white pixel cannot cross it, and the two attacks differ by a few images only)
    r = evaluate_defence(lenet5_trained, InputQuantization(2), x, y, PGDConfig(eps=0.4, steps=10), seed=0)
    assert r["defended_clean_accuracy"] > 0.9
    assert r["undefended_robust_accuracy"] < 0.2
    # binarisation undoes much of an unaware attack, but BPDA sees through it (about 20 pp more success on the
    # shared LeNet-5 baseline, 64 and 256 images alike)
    assert r["nonadaptive_robust_accuracy"] > r["undefended_robust_accuracy"] + 0.2
    assert r["adaptive_robust_accuracy"] < r["nonadaptive_robust_accuracy"] - 0.05


def test_median_filter_adaptive(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:32], sec_batch[1][:32]
    r = evaluate_defence(lenet5_trained, MedianFilter(3), x, y, PGDConfig(eps=0.2, steps=5), seed=0)
    assert r["adaptive_robust_accuracy"] <= r["nonadaptive_robust_accuracy"] + 1e-9
    d = Defended(MedianFilter(3), lenet5_trained)
    assert d(x).shape == (32, 10)


def test_learned_thresholds_sorted_in_range(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:32], sec_batch[1][:32]
    t = learn_thresholds(lenet5_trained, x, y, levels=3, steps=5, batch_size=32, seed=0)
    assert t.shape == (2,) and bool((t > 0).all() and (t < 1).all()) and bool(t[0] <= t[1])
    assert torch.equal(t, learn_thresholds(lenet5_trained, x, y, levels=3, steps=5, batch_size=32, seed=0))


def test_adversarial_loss_exceeds_clean(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch
    loss_fn = adversarial_loss(PGDConfig(eps=0.2, steps=5), seed=0)
    adv_loss = loss_fn(lenet5_trained, x, y)
    clean = nn.functional.cross_entropy(lenet5_trained(x), y)
    assert float(adv_loss.detach()) > float(clean.detach()) + 0.5
    adv_loss.backward()  # gradients reach the weights (it is a training loss)
    fc2 = lenet5_trained.get_submodule("fc2")
    assert isinstance(fc2, nn.Linear) and fc2.weight.grad is not None
    ramp = adversarial_loss(PGDConfig(eps=0.2, steps=5), seed=0, ramp_steps=1000)
    assert float(ramp(lenet5_trained, x, y).detach()) < float(adv_loss.detach())  # eps 0.2/1000 at step 1


def test_adversarial_train_ends_with_the_last_epoch(lenet5_trained: nn.Module, mnist_small) -> None:
    train, val = mnist_small.train.subset(512), mnist_small.val.subset(200)
    start = evaluate(lenet5_trained, val).accuracy
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0)
    res = adversarial_train(lenet5_trained, train, val, cfg, PGDConfig(eps=0.3, steps=3), seed=0)
    final = evaluate(lenet5_trained, val).accuracy
    assert final == pytest.approx(res.history[-1]["val_accuracy"])  # the last epoch's weights, not the best
    assert final < start  # training on eps-0.3 examples costs clean accuracy: keeping the best would undo it

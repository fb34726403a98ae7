"""The security verbs: attack / defend / backdoor on LeNet-5 and on user-style models; the model passed in is
left as it was; configs validate when built and nest their sub-configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer import (
    BackdoorConfig,
    BadNetsConfig,
    DefenceConfig,
    FGSMConfig,
    FinePruneConfig,
    JSMAConfig,
    PGDConfig,
    TrainConfig,
    attack,
    backdoor,
    defend,
)
from crosslayer.config import from_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.security.transforms import Defended


def _snapshot(model: nn.Module) -> tuple[bool, dict[str, torch.Tensor], list[bool]]:
    return (model.training, {k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()])


def _unchanged(model: nn.Module, snap: tuple[bool, dict[str, torch.Tensor], list[bool]]) -> bool:
    training, state, grads = snap
    return (model.training == training and [p.requires_grad for p in model.parameters()] == grads
            and all(torch.equal(state[k], v) for k, v in model.state_dict().items()))


def test_attack_config_type_picks_the_attack(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    x, y = mnist_small.test.images[:40], mnist_small.test.labels[:40]
    lenet5_trained.train()  # the attack evaluates in eval mode and gives the mode back
    snap = _snapshot(lenet5_trained)
    fgsm = attack(lenet5_trained, FGSMConfig(eps=0.25), x, y, seed=0)
    pgd = attack(lenet5_trained, PGDConfig(eps=0.25, steps=10), x, y, seed=0)
    assert fgsm.attack == "fgsm" and pgd.attack == "pgd"
    assert float((fgsm.adv - x).abs().max()) <= 0.25 + 1e-6 and float((pgd.adv - x).abs().max()) <= 0.25 + 1e-6
    assert pgd.metrics["robust_accuracy"] <= fgsm.metrics["robust_accuracy"] + 0.05  # PGD is the stronger attack
    assert pgd.metrics["success_rate"] > 0.5
    again = attack(lenet5_trained, PGDConfig(eps=0.25, steps=10), x, y, seed=0)
    assert torch.equal(again.adv, pgd.adv), "same seed, same adversarial images"
    jsma = attack(lenet5_trained, JSMAConfig(), x[:4], y[:4])
    assert jsma.attack == "jsma" and bool((jsma.adv_pred[jsma.success] == (y[:4][jsma.success] + 1) % 10).all())
    assert _unchanged(lenet5_trained, snap)


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny", "attention_mlp", "functional_cnn"])
def test_attack_user_models(user_model, name: str) -> None:
    """Any differentiable classifier: BatchNorm, depthwise / ReLU6 / SE, attention, functional ops."""
    net = user_model(name).eval()
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)  # the untrained model's own predictions: every image starts correct
    snap = _snapshot(net)
    res = attack(net, PGDConfig(eps=0.3, steps=5), x, y, seed=1, with_ssim=False)
    assert res.metrics["clean_accuracy"] == 1.0 and 0.0 <= res.metrics["success_rate"] <= 1.0
    assert float((res.adv - x).abs().max()) <= 0.3 + 1e-6 and 0.0 <= float(res.adv.min()) <= float(res.adv.max()) <= 1
    with torch.no_grad():  # PGD ascends the loss (an untrained model's predictions need not flip)
        assert float(nn.functional.cross_entropy(net(res.adv), y)) > float(nn.functional.cross_entropy(net(x), y))
    assert _unchanged(net, snap)


def test_defend_input_defences(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    x, y = mnist_small.test.images[:16], mnist_small.test.labels[:16]
    snap = _snapshot(lenet5_trained)
    cfg = DefenceConfig(defence="median", attack=PGDConfig(eps=0.2, steps=3))
    res = defend(lenet5_trained, cfg, x, y, seed=0)
    assert isinstance(res.model, Defended) and res.model.model is lenet5_trained
    assert 0.0 <= res.adaptive_robust_accuracy <= res.nonadaptive_robust_accuracy + 1 / 16 + 1e-9
    assert res.clean_accuracy > 0.8 and set(res.metrics()) >= {"defence", "adaptive_robust_accuracy"}
    small = DataSplits(mnist_small.train.subset(64), mnist_small.val.subset(64), mnist_small.test.subset(16))
    learned = defend(lenet5_trained, DefenceConfig(defence="learned-quantize", calibration_images=32,
                                                   attack=PGDConfig(eps=0.2, steps=2)), x, y, data=small, seed=0)
    assert 0.0 <= learned.adaptive_robust_accuracy <= 1.0
    assert _unchanged(lenet5_trained, snap)
    with pytest.raises(ConfigError, match="pass data="):
        defend(lenet5_trained, DefenceConfig(defence="learned-quantize"), x, y)


def test_defend_user_model_and_adversarial_training(user_model, mnist_small: DataSplits) -> None:
    net = user_model("resnet_tiny").eval()
    x, y = mnist_small.test.images[:12], mnist_small.test.labels[:12]
    res = defend(net, DefenceConfig(defence="quantize", attack=PGDConfig(eps=0.1, steps=2)), x, y)
    assert res.defended_clean_accuracy == pytest.approx(float((res.model(x).argmax(1) == y).float().mean()))
    snap = _snapshot(net)
    small = DataSplits(mnist_small.train.subset(128), mnist_small.val.subset(64), mnist_small.test.subset(12))
    adv = defend(net, DefenceConfig(defence="adv-train", epochs=1, train_steps=1, attack=PGDConfig(eps=0.1, steps=2)),
                 x, y, data=small, seed=0)
    assert adv.model is not net and _unchanged(net, snap)
    assert not torch.equal(adv.model.fc.weight, net.fc.weight)  # the copy was trained
    assert 0.0 <= adv.adaptive_robust_accuracy <= adv.defended_clean_accuracy + 1e-9


def test_backdoor_trains_a_copy(user_model, mnist_small: DataSplits) -> None:
    data = DataSplits(mnist_small.train.subset(500), mnist_small.val.subset(100), mnist_small.test.subset(200))
    net = user_model("functional_cnn")
    snap = _snapshot(net)
    cfg = BackdoorConfig(badnets=BadNetsConfig(rate=0.2), train=TrainConfig(epochs=1, lr=0.003, optimizer="adam",
                                                                             weight_decay=0.0),
                         fine_prune=FinePruneConfig(epochs=0))
    res = backdoor(net, cfg, data, seed=0)
    assert res.poisoned_images == 100 and res.model is not net and _unchanged(net, snap)
    assert 0 <= res.pruned_channels <= res.channels == 8  # the last Conv2d (branch1) is fine-pruned
    for k, v in res.metrics().items():
        if k.endswith(("_before", "_after")):
            assert 0.0 <= v <= 1.0, k


def test_configs_validate_and_nest() -> None:
    with pytest.raises(ConfigError, match="unknown defence 'blur'"):
        DefenceConfig(defence="blur")
    with pytest.raises(ConfigError, match=r"\[defend\] attack\.eps"):
        from_mapping(DefenceConfig, {"attack": {"eps": -0.1}}, section="defend")
    cfg = from_mapping(BackdoorConfig, {"badnets": {"rate": 0.05}, "train": {"epochs": 2}}, section="backdoor")
    assert cfg.badnets.rate == 0.05 and cfg.train.epochs == 2 and cfg.fine_prune == FinePruneConfig()
    with pytest.raises(ConfigError, match="rate"):
        BackdoorConfig(badnets=BadNetsConfig(rate=1.5))
    with pytest.raises(ConfigError, match="eps"):
        PGDConfig(eps=-1)

import pytest
import torch
from torch import nn

from crosslayer.errors import ConfigError, ModelError
from crosslayer.security import BadNetsConfig, FinePruneConfig, add_trigger, attack_success_rate, fine_prune, poison
from crosslayer.security.fine_pruning import channel_activity, last_conv


def test_trigger_and_poisoning(mnist_small) -> None:
    cfg = BadNetsConfig(rate=0.1, target=0, patch=3)
    x = torch.zeros(2, 1, 28, 28)
    t = add_trigger(x, cfg)
    assert float(t[:, :, 25:, 25:].min()) == 1.0 and float(t.sum()) == 2 * 9
    ds, idx = poison(mnist_small.train, cfg, seed=0)
    assert len(idx) == round(0.1 * len(mnist_small.train))
    assert bool((ds.labels[idx] == 0).all()) and bool((mnist_small.train.labels[idx] != 0).all())
    assert float(ds.images[idx][:, :, 25:, 25:].min()) == 1.0
    _, idx2 = poison(mnist_small.train, cfg, seed=0)
    assert torch.equal(idx, idx2)
    with pytest.raises(ConfigError, match="target"):
        poison(mnist_small.train, BadNetsConfig(target=10))
    with pytest.raises(ConfigError, match="rate"):
        BadNetsConfig(rate=1.5).validate()


def test_asr_of_clean_model_is_low(lenet5_trained: nn.Module, mnist_small) -> None:
    test = mnist_small.test.subset(500)
    assert attack_success_rate(lenet5_trained, test, BadNetsConfig()) < 0.1


def test_fine_pruning_zeroes_dormant_channels(lenet5_trained: nn.Module, mnist_small) -> None:
    assert last_conv(lenet5_trained) == "conv2"
    act = channel_activity(lenet5_trained, "conv2", mnist_small.val.images[:200])
    assert act.shape == (50,) and bool((act >= 0).all())
    train, val = mnist_small.train.subset(1000), mnist_small.val.subset(300)
    res = fine_prune(lenet5_trained, train, val, FinePruneConfig(epochs=1, max_drop_pp=2.0, max_fraction=0.5), seed=0)
    assert 0 < len(res.pruned) <= 25
    conv2 = lenet5_trained.get_submodule("conv2")
    assert isinstance(conv2, nn.Conv2d)
    w = conv2.weight
    assert float(w.detach()[res.pruned].abs().sum()) == 0.0  # pruned channels stayed zero through fine-tuning
    assert res.val_accuracy_start - res.val_accuracy_pruned <= 0.02 + 1e-9
    assert res.val_accuracy_final > 0.9
    with pytest.raises(ModelError, match="not a Conv2d"):
        channel_activity(lenet5_trained, "fc1", mnist_small.val.images[:10])

"""Structured channel pruning: dependency tracing, exact removal of dead channels, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.errors import ConfigError, StageError
from crosslayer.models import LeNet5, SmallVGG
from crosslayer.prune import (
    channel_importance,
    count_macs,
    kept_channels,
    prunable_groups,
    prune_groups,
    prune_structured,
    trace_channel_groups,
)

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


class ResToy(nn.Module):
    """A stem and one residual block (conv-bn-relu-conv-bn + identity), pooled into a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2, self.b2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(x + self.b2(self.c2(y)))
        return self.fc(torch.flatten(self.pool(x), 1))


class CatToy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))


class SoftmaxToy(nn.Module):
    """A softmax across the channels mixes them: an op the tracer must freeze."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.softmax(self.a(x), 1).mean((2, 3)))


def _kill_channels(model: nn.Module, producers: dict[str, list[int]], norms: dict[str, list[int]]) -> None:
    """Make channels dead: zero filter, bias and (for batch-norm) gamma and beta."""
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, idx in producers.items():
            mods[name].weight[idx] = 0
            if mods[name].bias is not None:
                mods[name].bias[idx] = 0
        for name, idx in norms.items():
            mods[name].weight[idx] = 0
            mods[name].bias[idx] = 0


def test_lenet5_groups_and_flatten_dependency() -> None:
    groups = {g.key: g for g in trace_channel_groups(LeNet5(), X)}
    assert groups["conv2"].consumers == [("fc1", 16)]  # 50 channels x 4x4 features into fc1
    assert groups["conv1"].consumers == [("conv2", 1)]
    assert groups["fc2"].frozen.startswith("model output")
    assert [g.key for g in prunable_groups(LeNet5(), X)] == ["conv1", "conv2", "fc1"]


def test_removing_dead_channels_is_exact_lenet5() -> None:
    torch.manual_seed(0)
    net = LeNet5().eval()
    _kill_channels(net, {"conv1": [0, 5, 7], "conv2": [1, 2, 3, 40], "fc1": list(range(0, 500, 5))}, {})
    ref = net(X)
    groups = prunable_groups(net, X)
    kept = prune_groups(net, groups, {"conv1": 17, "conv2": 46, "fc1": 400})
    assert not {0, 5, 7} & set(kept["conv1"].tolist())
    assert (net.conv1.out_channels, net.conv2.in_channels, net.conv2.out_channels) == (17, 17, 46)
    assert (net.fc1.in_features, net.fc1.out_features, net.fc2.in_features) == (46 * 16, 400, 400)
    assert isinstance(net, LeNet5)
    torch.testing.assert_close(net(X), ref, atol=1e-5, rtol=1e-5)


def test_removing_dead_channels_is_exact_vgg_with_batchnorm() -> None:
    torch.manual_seed(0)
    net = SmallVGG().eval()
    _kill_channels(net, {"features.0": [3, 4], "features.10": [0, 63]}, {"features.1": [3, 4], "features.11": [0, 63]})
    ref = net(X)
    prune_groups(net, prunable_groups(net, X), {"features.0": 30, "features.10": 62})
    assert net.features[1].num_features == 30 and net.features[1].running_mean.shape == (30,)
    assert net.classifier[1].in_features == 62 * 49
    torch.testing.assert_close(net(X), ref, atol=1e-5, rtol=1e-5)


def test_residual_addition_couples_stem_and_block_output() -> None:
    net = ResToy().eval()
    groups = {g.key: g for g in trace_channel_groups(net, X)}
    res = groups["stem"]
    assert sorted(res.producers) == ["c2", "stem"] and sorted(n for n, _ in res.norms) == ["b2", "bn0"]
    assert sorted(n for n, _ in res.consumers) == ["c1", "fc"]
    _kill_channels(net, {"stem": [2, 6], "c2": [2, 6], "c1": [5]}, {"bn0": [2, 6], "b2": [2, 6], "b1": [5]})
    ref = net(X)
    result = prune_structured(net, X, 0.2)  # round(0.2*8) = 2 of the residual group, round(0.2*6) = 1 of c1
    assert result.channels_after == {"stem": 6, "c1": 5}
    assert net.stem.out_channels == net.c2.out_channels == net.fc.in_features == net.b2.num_features == 6
    assert net.c1.in_channels == 6 and net.c2.in_channels == 5
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    torch.testing.assert_close(net(X), ref, atol=1e-5, rtol=1e-5)


def test_macs_shrink_with_channels() -> None:
    net = LeNet5()
    assert count_macs(net, X) == 20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10
    r = prune_structured(net, X, 0.5, importance="l2")
    assert r.macs_after == 10 * 24 * 24 * 25 + 25 * 8 * 8 * 10 * 25 + 400 * 250 + 250 * 10
    with torch.no_grad():
        net.fc1.weight[:, :100] = 0
    assert count_macs(net, X, nonzero=True) == r.macs_after - 250 * 100


def test_unsupported_ops_freeze_their_groups() -> None:
    groups = trace_channel_groups(SoftmaxToy(), X)
    assert all(not g.prunable for g in groups)
    assert any("softmax" in g.frozen for g in groups)
    with pytest.raises(StageError, match="no prunable channel group"):
        prunable_groups(SoftmaxToy(), X)
    cat = {g.key: g for g in trace_channel_groups(CatToy(), X)}  # a concatenation is followed, not frozen
    assert cat["a"].prunable and cat["b"].prunable and cat["b"].offsets == {"fc": (("a", 1, 4),)}


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"'conv9'.*allowed: conv1, conv2, fc1, fc2"):
        prunable_groups(LeNet5(), X, ["conv9"])
    with pytest.raises(ConfigError, match="amount"):
        prune_structured(LeNet5(), X, 1.0)
    with pytest.raises(ConfigError, match="importance"):
        channel_importance(LeNet5(), prunable_groups(LeNet5(), X)[0], "l3")  # type: ignore[arg-type]

    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) if x.sum() > 0 else self.fc(x.flatten(1)) * 2

    with pytest.raises(StageError, match="torch.fx-traceable"):
        prunable_groups(Dynamic(), X)


@pytest.mark.parametrize(("size", "amount", "round_to", "kept"), [
    (16, 0.3, 1, 11), (16, 0.3, 8, 8), (32, 0.3, 8, 24), (64, 0.3, 8, 48), (64, 0.3, 4, 44),
    (16, 0.0, 8, 16), (16, 0.9, 8, 8), (6, 0.5, 8, 3), (10, 0.05, 8, 8), (12, 0.0, 8, 12),
])
def test_kept_channels_rounds_to_a_multiple_within_the_group(size: int, amount: float, round_to: int,
                                                            kept: int) -> None:
    assert kept_channels(size, amount, round_to) == kept


def test_round_to_keeps_every_group_a_multiple() -> None:
    from crosslayer.models import build_model
    from crosslayer.prune import ChannelPruneConfig, sparsify

    model = build_model("resnet20", num_classes=10, in_channels=1, image_size=28)
    plain = sparsify(model, ChannelPruneConfig(amount=0.3, input_shape=(1, 28, 28))).model
    rounded = sparsify(model, ChannelPruneConfig(amount=0.3, round_to=8, input_shape=(1, 28, 28))).model
    widths = {m.out_channels for m in rounded.modules() if isinstance(m, nn.Conv2d)}
    assert widths == {8, 24, 48}
    assert {m.out_channels for m in plain.modules() if isinstance(m, nn.Conv2d)} == {11, 22, 45}
    assert rounded(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="round_to"):
        ChannelPruneConfig(amount=0.3, round_to=0)

"""The ``inject_faults`` verb: the same figures as the campaign functions it calls, on LeNet-5 and on user-style
models, never touching the model passed in, and its config validated when built."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import crosslayer as xl
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.resilience import ber_campaign, bit_sensitivity, fault_report, noise_campaign


def _same_state(a: nn.Module, b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items())


def test_single_flips_on_lenet_match_the_campaign(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    before = {k: v.clone() for k, v in lenet5_trained.state_dict().items()}
    lenet5_trained.train()
    cfg = xl.FaultConfig(layers=("conv1", "fc2"), bits=(30, 22), injections=4, eval_limit=100)
    res = xl.inject_faults(lenet5_trained, cfg, mnist_small, seed=3)
    assert _same_state(lenet5_trained, before) and lenet5_trained.training  # a copy was attacked, mode kept
    lenet5_trained.eval()
    x, y = mnist_small.test.images[:100], mnist_small.test.labels[:100]
    direct = bit_sensitivity(lenet5_trained, x, y, layers=["conv1", "fc2"], bits=(30, 22), injections=4, seed=3)
    assert res.cells is not None and res.images == 100
    assert [c.mean_drop_pp for c in res.cells.cells] == [c.mean_drop_pp for c in direct.cells]
    assert res.drops == direct.layer_drops() and sorted(res.ranking) == ["conv1", "fc2"]
    assert [res.drops[n] for n in res.ranking] == sorted(res.drops.values())
    m = res.metrics()
    assert m["injections"] == 2 * 2 * 4 and m["target"] == "weights" and m["resilience_ranking"] == res.ranking
    rep = fault_report(res)
    assert rep.tables[0].title == "Single bit flips" and len(rep.figures) == 1


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny"])
def test_ber_and_noise_on_user_models(user_model, mnist_small: DataSplits, name: str) -> None:
    net = user_model(name).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = mnist_small.test.images[:40], mnist_small.test.labels[:40]
    ber = xl.inject_faults(net, xl.FaultConfig(campaign="ber", bers=(1e-3, 1e-2), trials=1, eval_limit=40),
                           mnist_small.test, seed=5)
    base, stats = ber_campaign(net, x, y, bers=(1e-3, 1e-2), trials=1, seed=5)
    assert ber.baseline_accuracy == base and [s.mean_drop_pp for s in ber.trials] == [s.mean_drop_pp for s in stats]
    assert set(ber.drops) == {s.target for s in stats} - {"all"}
    assert ber.drops == {s.target: s.mean_drop_pp for s in stats if s.level == 1e-2 and s.target != "all"}
    noise = xl.inject_faults(net, xl.FaultConfig(campaign="noise", noise_sigma=1.0, trials=1, eval_limit=40),
                             mnist_small, seed=6)
    _, nstats = noise_campaign(net, x, y, sigma=1.0, trials=1, seed=6)
    assert noise.drops == {s.target: s.mean_drop_pp for s in nstats}
    assert noise.metrics()["target"] == "activations" and len(noise.metrics()["results"]) == len(nstats)
    flips = xl.inject_faults(net, xl.FaultConfig(campaign="activation_flips", flips=2, trials=1, eval_limit=40),
                             mnist_small, seed=7)
    assert set(flips.ranking) == set(noise.ranking) and all(math.isfinite(v) for v in flips.drops.values())
    assert fault_report(ber).figures and _same_state(net, before)


def test_config_validates_when_built() -> None:
    with pytest.raises(ConfigError, match="bers"):
        xl.FaultConfig(campaign="ber")
    with pytest.raises(ConfigError, match="at most one bit position"):
        xl.FaultConfig(campaign="activation_flips", bits=(1, 2))
    with pytest.raises(ConfigError, match="not a bit-error rate"):
        xl.FaultConfig(campaign="ber", bers=(1.5,))
    with pytest.raises(ConfigError, match="margin"):
        xl.FaultConfig(margin=float("nan"))

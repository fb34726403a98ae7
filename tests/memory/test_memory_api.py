"""The ``scale_memory_voltage`` verb on LeNet-5 and on user-style models: seeded chips, the budget rule on the
selection split, memory-adaptive training below the conventional voltage, the input model untouched."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import crosslayer as xl
from crosslayer.data import DataSplits


def _small(data: DataSplits) -> DataSplits:
    return DataSplits(train=data.train.subset(400), val=data.val.subset(200), test=data.test.subset(200))


def test_lenet_sweep_and_adaptation(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    data = _small(mnist_small)
    lenet5_trained.train()
    before = {k: v.clone() for k, v in lenet5_trained.state_dict().items()}
    cfg = xl.MemoryConfig(voltages=(1.0, 0.5, 0.45, 0.42), fault_mode="flip", chips=2, budget_pp=1.0,
                          adapt_limit=400, adapt_max_voltages=1)
    res = xl.scale_memory_voltage(lenet5_trained, cfg, data, seed=1)
    assert lenet5_trained.training and all(torch.equal(v, before[k]) for k, v in lenet5_trained.state_dict().items())
    assert res.grid == (1.0, 0.5, 0.45, 0.42) and len(res.chips) == 2 and not res.quantized
    conv = {p.voltage: p.mean for p in res.conventional_selection}
    ok = [v for v in res.grid if 100 * (res.fault_free_selection_accuracy - conv[v]) <= cfg.budget_pp]
    if res.conventional_voltage is not None:  # the rule walks down and stops at the first voltage over budget
        assert res.conventional_voltage in ok and conv[1.0] >= conv[res.grid[-1]]
    assert res.adapt_voltages == [v for v in res.grid if res.conventional_voltage is None
                                  or v < res.conventional_voltage][:1]
    assert set(res.adapted_test) == set(res.adapt_voltages)
    assert (res.adapted_model is not None) == (res.adapted_voltage is not None)
    assert res.energy[1.0]["buffer_ratio"] == pytest.approx(1.0) and res.energy[0.42]["buffer_ratio"] < 1.0
    again = xl.scale_memory_voltage(lenet5_trained, dataclasses.replace(cfg, adapt=False), data, seed=1)
    assert [p.accuracies for p in again.conventional_test] == [p.accuracies for p in res.conventional_test]


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny"])
def test_user_models(user_model, mnist_small: DataSplits, name: str) -> None:
    data = _small(mnist_small)
    net = user_model(name)
    xl.fit(net, data.train, data.val, xl.TrainConfig(epochs=1, optimizer="adam", lr=0.003))
    cfg = xl.MemoryConfig(curve="kc705b-28nm", voltages=(1.0, 0.6, 0.53), chips=1, adapt=False)
    res = xl.scale_memory_voltage(net, cfg, data, seed=0)
    assert [p.voltage for p in res.conventional_test] == [1.0, 0.6, 0.53]
    assert all(0.0 <= a <= 1.0 for p in res.conventional_test for a in p.accuracies)
    assert res.voltage == res.conventional_voltage and res.adapted_model is None
    assert res.test_accuracy is None or 0.0 <= res.test_accuracy <= 1.0
    weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert res.chips[0].bits == 8 * weights

"""The ``hardware_cost`` verb: the figures of the workload extraction and network costing it composes, on
LeNet-5 and on user-style models, from real inputs or from an input shape; the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import crosslayer as xl
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.hw import SparsityConfig, evaluate_network, load_accelerator
from crosslayer.hw.workload import extract_workload


def test_lenet_cost_matches_its_parts(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    x = mnist_small.test.images[:16]
    lenet5_trained.train()
    before = {k: v.clone() for k, v in lenet5_trained.state_dict().items()}
    cfg = xl.CostConfig(sparsity=SparsityConfig(skip="both"), relative_power={"fc1": 0.5})
    res = xl.hardware_cost(lenet5_trained, "eyeriss", cfg, inputs=x)
    assert lenet5_trained.training and all(torch.equal(v, before[k]) for k, v in lenet5_trained.state_dict().items())
    acc = load_accelerator("eyeriss")
    wl = extract_workload(lenet5_trained, x, float_bits=acc.reference_bits)
    ref = evaluate_network(wl, acc, sparsity=SparsityConfig(skip="both"), relative_power={"fc1": 0.5})
    assert res.workload == wl and res.cost.macs == 2_293_000
    assert res.energy == ref.energy("best") and res.latency_ms == pytest.approx(ref.latency_s("best") * 1e3)
    assert [c.dataflow for c in res.layers] == [c.dataflow for c in ref.best_per_layer()]
    plain = xl.hardware_cost(lenet5_trained, acc, inputs=x)
    assert res.energy < plain.energy  # zero skipping and a cheaper multiplier in fc1 cost less
    m = res.metrics()
    assert m["accelerator"] == "eyeriss" and m["energy_per_inference"] == res.energy
    assert {f"energy_{df}" for df in res.cost.dataflows} <= set(m)


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny", "functional_cnn"])
def test_user_models_from_an_input_shape(user_model, mnist_small: DataSplits, name: str) -> None:
    net = user_model(name).eval()
    by_shape = xl.hardware_cost(net, "tpu", input_shape=(1, 28, 28), seed=1)
    by_data = xl.hardware_cost(net, "tpu", inputs=mnist_small.test.images[:8])
    assert [s.name for s in by_shape.workload] == [s.name for s in by_data.workload]
    assert by_shape.cost.macs == by_data.cost.macs > 0  # MACs depend on shapes only
    assert all(c.total_energy > 0 and c.cycles > 0 for c in by_data.layers)
    if name == "mobilenet_tiny":
        assert any(s.kind == "dwconv" for s in by_data.workload)
    again = xl.hardware_cost(net, "tpu", input_shape=(1, 28, 28), seed=1)
    assert again.energy == by_shape.energy  # the random sample is seeded


def test_config_and_input_errors(lenet5_trained: nn.Module) -> None:
    with pytest.raises(ConfigError, match="'ZZ' is unknown"):
        xl.CostConfig(dataflows=("ZZ",))
    with pytest.raises(ConfigError, match="relative_power.fc1"):
        xl.CostConfig(relative_power={"fc1": -1.0})
    with pytest.raises(ConfigError, match="inputs"):
        xl.hardware_cost(lenet5_trained, "eyeriss")

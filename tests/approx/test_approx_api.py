"""The ``approximate`` and ``evaluate_assignment`` verbs on an int8 LeNet-5 and on a user-style model: the
selection respects the budget on the selection split, the result matches its own model, the input is untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import crosslayer as xl
from crosslayer.approx import ApproxLayer, approximable_layers
from crosslayer.approx.api import evaluate_assignment
from crosslayer.data import DataSplits
from crosslayer.errors import StageError
from crosslayer.quant import QuantLayer


def _small(data: DataSplits) -> DataSplits:
    return DataSplits(train=data.train.subset(600), val=data.val.subset(200), test=data.test.subset(200))


CFG = xl.ApproximateConfig(multipliers=("exact", "trunc6", "drum4"), per_layer_sweep=False, cured=(), budget_pp=1.0,
                           select_limit=200, calibration_images=300)


def test_approximate_int8_lenet(lenet5_int8: nn.Module, mnist_small: DataSplits) -> None:
    data = _small(mnist_small)
    before = {k: v.clone() for k, v in lenet5_int8.state_dict().items()}
    res = xl.approximate(lenet5_int8, CFG, data, ranking=["fc2", "conv1"])
    assert all(torch.equal(v, before[k]) for k, v in lenet5_int8.state_dict().items())
    assert res.int8_note is None and res.ranking[:2] == ["fc2", "conv1"] and res.ranking_source == "given"
    assert res.selection.loss_pp <= CFG.budget_pp + 1e-9 and 0 <= res.power_saving < 1
    assert set(res.assignment) == set(approximable_layers(lenet5_int8))
    assert res.test_accuracy == xl.evaluate(res.model, data.test).accuracy and res.test_images == 200
    assert [c.layer for c in res.layers] == approximable_layers(lenet5_int8)
    assert all(c.multiplier.name == res.assignment[c.layer]["name"] for c in res.layers)
    chosen = {n: a["name"] for n, a in res.assignment.items()}
    again = evaluate_assignment(lenet5_int8, chosen, data)
    assert again.accuracy == res.test_accuracy and again.exact_accuracy == res.exact_int8_test_accuracy


def test_approximate_a_float_user_model(user_model, mnist_small: DataSplits) -> None:
    data = _small(mnist_small)
    net = user_model("functional_cnn").eval()
    xl.fit(net, data.train, data.val, xl.TrainConfig(epochs=1, optimizer="adam", lr=0.003))
    res = xl.approximate(net, CFG, data)
    assert res.int8_note and "int8 copy" in res.int8_note and res.ranking_source == "sweep"
    assert not any(isinstance(m, (ApproxLayer, QuantLayer)) for m in net.modules())  # the float model is kept
    assert sorted(res.ranking) == sorted(res.assignment) and res.selection.loss_pp <= CFG.budget_pp + 1e-9
    everywhere = evaluate_assignment(net, {}, data, default="trunc6", calibration_images=300)
    assert {a["name"] for a in everywhere.assignment.values()} == {"trunc6"}
    with pytest.raises(StageError, match="no quantized layer named 'nope'"):
        evaluate_assignment(net, {"nope": "drum4"}, data, calibration_images=300)

"""The curable design: carry-save invariants, the uncured error, bit-exact cured layers, the modelled cost,
and its place in the approximate stage's report."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crosslayer.approx import approximate_model, integer_reference_model, uniform_metrics
from crosslayer.approx.cured import (
    carry_save_vectors,
    cured_cost,
    cured_design,
    cured_model,
    split_product,
)
from crosslayer.approx.stage import ApproximateConfig, approximate_stage
from crosslayer.config import from_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.flow import StageContext, load_flow_config
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.train import predict

V = np.arange(256)


def test_carry_save_array_and_the_cut_carry() -> None:
    s, c = carry_save_vectors(V[:, None], V[None, :])
    assert (s + c == V[:, None] * V[None, :]).all()
    assert not (c & 0xFF).any()  # the low 8 product bits are final in S: the merge adder spans columns 8..15
    for k in range(9, 16):
        prod, carry = split_product(V[:, None], V[None, :], k)
        assert set(np.unique(carry)) == {0, 1}  # the approximation is real: some products lose 2^k
        assert (prod + (carry << k) == V[:, None] * V[None, :]).all()
    d = cured_design("cann12")
    assert uniform_metrics(d.uncured).med > 500 and d.uncured.name == "cann12-uncured"
    with pytest.raises(ConfigError, match="cann<k> with k = 9..15"):
        cured_design("cann8")


def test_modelled_cost() -> None:
    costs = {k: cured_cost(k) for k in range(9, 16)}
    assert min(costs, key=lambda k: costs[k].relative_latency) == 12
    c = costs[12]
    assert c.relative_latency == pytest.approx(12 / 16)  # t_and + 7 t_FA + max(4, 4) vs + 8
    assert c.relative_area > 1.0 and c.supply_ratio < 1.0 and c.relative_power < 1.0
    assert c.relative_power == pytest.approx(c.relative_area * c.supply_ratio**2)
    delay = lambda v: v / (v - 0.3) ** 1.3  # noqa: E731  (the alpha-power law the model solves)
    assert delay(c.supply_ratio) * c.relative_latency == pytest.approx(delay(1.0), rel=1e-6)
    with pytest.raises(ConfigError):
        cured_cost(16)


def test_cured_lenet5_equals_the_exact_integer_model(lenet5_int8: nn.Module, mnist_small: DataSplits) -> None:
    x = mnist_small.test.images[:64]
    exact = predict(integer_reference_model(lenet5_int8), x)
    cured = predict(cured_model(lenet5_int8, "cann12"), x)
    assert torch.equal(cured, exact)
    uncured = predict(approximate_model(lenet5_int8, dict.fromkeys(["conv1", "conv2", "fc1", "fc2"],
                                                                   cured_design("cann12").uncured)), x)
    assert (uncured - exact).abs().max() > 0.1 * exact.abs().max()


def test_cured_user_style_layers_are_exact() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    q = quantize_model(net, FixedPointSpec(bits=8, per_channel=True), FixedPointSpec(bits=8, signed=False))
    x = torch.rand(16, 3, 8, 8)
    with calibrating(q):
        q(x)
    q.eval()
    assert torch.equal(predict(cured_model(q, "cann11"), x), predict(integer_reference_model(q), x))
    asym = quantize_model(copy.deepcopy(net), FixedPointSpec(bits=8), FixedPointSpec(bits=8, symmetric=False,
                                                                                    signed=False))
    with calibrating(asym):
        asym(x)
    with pytest.raises(StageError, match="symmetric"):
        cured_model(asym, "cann12")
    with pytest.raises(StageError, match="no quantized layer named 'nope'"):
        cured_model(q, "cann12", layers=["nope"])


def test_the_stage_reports_the_cured_design(lenet5_int8: nn.Module, mnist_small: DataSplits, tmp_path: Path) -> None:
    data = DataSplits(train=mnist_small.train.subset(300), val=mnist_small.val.subset(200),
                      test=mnist_small.test.subset(100))
    ctx = StageContext(run_dir=tmp_path, flow=load_flow_config(None).flow, data=data, model=lenet5_int8,
                       device=torch.device("cpu"), seed=0)
    rep = approximate_stage(ctx, ApproximateConfig(multipliers=("exact",), per_layer_sweep=False,
                                                   cured=("cann12",))).report
    table = next(t for t in rep.tables if t.title.startswith("Curable designs"))
    assert table.rows[0][0] == "cann12" and table.rows[0][-1] is True
    cured = rep.metrics["cured"]["cann12"]
    assert cured["equals_exact"] is True and cured["accuracy"] == rep.metrics["uniform_sweep"]["exact"]
    assert cured["uncured_accuracy"] < cured["accuracy"]  # without its cure the design loses
    assert [f.title for f in rep.figures] == ["Accuracy vs multiplier MED", "Accuracy vs multiplier power"]
    with pytest.raises(ConfigError, match="unknown curable design"):
        from_mapping(ApproximateConfig, {"cured": ["cann3"]}, section="approximate")

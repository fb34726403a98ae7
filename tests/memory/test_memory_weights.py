"""A model computing with a chip's stored weights: targets, exact stored values, gradients, restoration."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crosslayer.approx import approximate_model
from crosslayer.errors import ConfigError, StageError
from crosslayer.memory import (
    DEFAULT_CODE_SPEC,
    apply_faults,
    builtin_curve,
    chip_weights,
    memory_layout,
    sample_chip,
    weight_targets,
)
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model, quantize_tensor
from crosslayer.resilience.faults import code_format

CURVE = builtin_curve("kc705b-28nm-probit")


def test_user_style_targets_and_stored_values(user_net: nn.Module) -> None:
    targets = weight_targets(user_net)
    names = [t.name for t in targets]
    assert names == ["stem", "res", "dw", "pw", "se.fc1", "se.fc2", "proj", "attn.in_proj_weight",
                     "attn.out_proj", "head"]
    tensors, width = memory_layout(targets)
    assert width == 8 and dict(tensors)["attn.in_proj_weight"] == 3 * 16 * 16
    chip = sample_chip(tensors, width, CURVE, v_low=0.42, seed=0)
    x = torch.rand(4, 1, 28, 28)
    before = {k: v.clone() for k, v in user_net.state_dict().items()}
    with torch.no_grad():
        clean = user_net(x)
        with chip_weights(user_net, None):  # the stored int8 words, no faults
            stored = user_net(x)
            w = user_net.head.weight
            q = quantize_tensor(before["head.weight"], DEFAULT_CODE_SPEC)
            assert torch.equal(w, q.dequantize())
        with chip_weights(user_net, chip, 0.42):
            faulty = user_net(x)
            w = user_net.attn.in_proj_weight  # read by attention's functional forward
            q = quantize_tensor(before["attn.in_proj_weight"], DEFAULT_CODE_SPEC)
            codes = apply_faults(q.codes, code_format(DEFAULT_CODE_SPEC), chip, "attn.in_proj_weight", 0.42)
            assert torch.equal(w, (codes.float() - q.zero_point) * q.scale)
            assert not torch.equal(codes, q.codes)
    assert 0 < (stored - clean).abs().max() < 0.1 * clean.abs().max()  # int8 rounding only
    assert (faulty - stored).abs().max() > (stored - clean).abs().max()
    after = user_net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_gradient_reaches_the_float_weights(user_net: nn.Module) -> None:
    tensors, width = memory_layout(weight_targets(user_net))
    chip = sample_chip(tensors, width, CURVE, v_low=0.45, seed=1)
    user_net.train()
    with chip_weights(user_net, chip, 0.45):
        loss = nn.functional.cross_entropy(user_net(torch.rand(8, 1, 28, 28)), torch.arange(8) % 10)
        loss.backward()
    assert all(t.module.weight.grad is not None for t in weight_targets(user_net) if t.param == "weight")
    assert user_net.attn.in_proj_weight.grad is not None and float(user_net.head.weight.grad.abs().sum()) > 0


def test_quantized_layers_use_their_own_codes(lenet5_trained: nn.Module, mnist_small) -> None:
    q = quantize_model(copy.deepcopy(lenet5_trained), FixedPointSpec(bits=8), FixedPointSpec(bits=8))
    with calibrating(q):
        q(mnist_small.train.images[:200])
    q.eval()
    specs = {t.name: t.spec for t in weight_targets(q)}
    assert specs["fc1"] == FixedPointSpec(bits=8)  # per tensor, the layer's own spec, not the default
    tensors, width = memory_layout(weight_targets(q))
    chip = sample_chip(tensors, width, CURVE, v_low=0.5, seed=2)
    x = mnist_small.test.images[:50]
    with torch.no_grad():
        ref = q(x)
        with chip_weights(q, chip, 1.0):  # nominal voltage: BER 0, the layer computes as before
            assert q.fc1.weight_spec is None
            assert torch.allclose(q(x), ref, atol=1e-5)
    assert q.fc1.weight_spec == FixedPointSpec(bits=8)
    with pytest.raises(StageError, match="approximate-multiplier layers"):
        weight_targets(approximate_model(q, {"fc1": "trunc4"}))


def test_errors() -> None:
    mixed = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), {"0": FixedPointSpec(bits=4),
                                                                          "1": FixedPointSpec(bits=8)})
    with pytest.raises(StageError, match="one word width"):
        weight_targets(mixed)
    with pytest.raises(StageError, match="no Conv2d, Linear or attention"):
        weight_targets(nn.Sequential(nn.ReLU()))
    net = nn.Sequential(nn.Linear(4, 4))
    other = sample_chip([("x", 16)], 8, CURVE, v_low=0.5, seed=0)
    with pytest.raises(ConfigError, match="drawn for another model"), chip_weights(net, other, 0.5):
        pass
    tensors, width = memory_layout(weight_targets(net))
    chip = sample_chip(tensors, width, CURVE, v_low=0.5, seed=0)
    with pytest.raises(ConfigError, match="no voltage given for 0"), chip_weights(net, chip, {"x": 0.5}):
        pass
    assert not hasattr(net[0], "parametrizations")  # nothing left behind after a refused start

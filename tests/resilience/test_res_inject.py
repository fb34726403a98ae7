"""Fault targets restore the model exactly; hooks remove themselves; bad layers are clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.errors import ConfigError, StageError
from crosslayer.quant import QuantLayer
from crosslayer.resilience import activation_hooks, correct_counts, patched_weights, stored_weights
from crosslayer.resilience.inject import fault_layers


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_patched_weights_restores_only_touched(lenet5_trained: nn.Module) -> None:
    before = _state(lenet5_trained)
    w = lenet5_trained.fc1.weight
    with patched_weights(w, torch.tensor([3, 77]), torch.tensor([9.0, -9.0])):
        assert w.view(-1)[3].item() == 9.0 and w.view(-1)[77].item() == -9.0
    assert all(torch.equal(before[k], v) for k, v in lenet5_trained.state_dict().items())


def test_stored_weights_uses_codes_and_restores(lenet5_int8: nn.Module,
                                                subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    before = _state(lenet5_int8)
    clean = correct_counts(lenet5_int8, x, y)
    with stored_weights(lenet5_int8) as lw:
        assert {str(v.fmt) for v in lw.values()} == {"sint8"}
        assert lenet5_int8.conv1.weight_spec is None  # fixed stored values, no re-calibrated scale
        # the dequantized codes compute exactly what the fake-quantized layer computed
        assert correct_counts(lenet5_int8, x, y) == clean
        codes = lw["fc2"].codes
        assert codes is not None
        assert torch.equal(lenet5_int8.fc2.weight, codes.dequantize())
    assert isinstance(lenet5_int8.conv1, QuantLayer) and lenet5_int8.conv1.weight_spec is not None
    assert all(torch.equal(before[k], v) for k, v in lenet5_int8.state_dict().items())


def test_msb_code_flip_value(lenet5_int8: nn.Module) -> None:
    with stored_weights(lenet5_int8, ["fc2"]) as lw:
        w = lw["fc2"]
        assert w.codes is not None
        code = int(w.codes.codes.reshape(-1)[10])
        new = w.faulty_values(torch.tensor([10]), torch.tensor([7]))
        flipped = code - 128 if code >= 0 else code + 128
        assert new.item() == pytest.approx(flipped * float(w.codes.scale.reshape(-1)[0]))


def test_layer_errors(lenet5_trained: nn.Module) -> None:
    assert fault_layers(lenet5_trained) == ["conv1", "conv2", "fc1", "fc2"]
    with (pytest.raises(ConfigError, match="'nope' does not exist; layers are: conv1, conv2, fc1, fc2"),
          stored_weights(lenet5_trained, ["nope"])):
        pass
    with pytest.raises(StageError, match="no integer codes"), stored_weights(lenet5_trained, ["fc1"], "codes"):
        pass


def test_activation_hooks_remove_themselves(lenet5_trained: nn.Module,
                                            subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    clean = correct_counts(lenet5_trained, x, y)
    with activation_hooks(lenet5_trained, ["fc1"], lambda _n, out: torch.zeros_like(out)):
        broken = correct_counts(lenet5_trained, x, y)
    assert broken < clean * 0.3  # a dead fc1 output leaves only fc2's bias: one class
    assert not lenet5_trained.fc1._forward_hooks
    assert correct_counts(lenet5_trained, x, y) == clean

"""One tracer for every MAC count: ``trace_layers`` (crosslayer.hw.workload) agrees with the workload the cost
model uses, pruning's ``count_macs``, the approximate step's ``layer_macs`` and the crossbar's matrix shapes, on
LeNet-5 and on user-style models (residual adds, depthwise convolutions, functional ops, Linear layers applied
to tokens); the cost model's workload also holds ``nn.MultiheadAttention``'s GEMMs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.hw.workload import extract_workload, trace_layers
from crosslayer.imc.cost import layer_shapes
from crosslayer.models import build_model
from crosslayer.prune.structured import count_macs
from user_models import build_user_model


def _convs_and_linears(_name: str, m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.Linear))


@pytest.mark.parametrize("name", ["lenet5", "resnet_tiny", "mobilenet_tiny", "functional_cnn", "attention_mlp"])
def test_every_mac_count_agrees(name: str) -> None:
    net = build_model("lenet5") if name == "lenet5" else build_user_model(name)
    net.train()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    calls = trace_layers(net, x[:1], _convs_and_linears)
    assert net.training  # the mode is restored
    traced = sum(c.macs_per_sample for c in calls)
    assert traced == count_macs(net, x)
    attention = 0
    if name == "attention_mlp":  # MultiheadAttention's GEMMs (its linears run functionally, unseen by hooks)
        t, e = 49, 32  # 7 x 7 patches of 4 x 4 px, width 32
        attention = t * e * 3 * e + 2 * t * t * e + t * e * e  # in_proj, scores + context over heads, out_proj
    assert traced + attention == sum(s.macs for s in extract_workload(net, x, include_pooling=False))
    assert traced == sum(s.macs_per_vector * s.vectors for s in layer_shapes(net, (1, 28, 28)))
    if name == "lenet5":
        assert traced == 2_293_000


def test_a_module_called_twice_is_recorded_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.fc(x)))

    seen: list[str] = []
    calls = trace_layers(Twice(), torch.rand(2, 4), _convs_and_linears, on_call=lambda n, *_: seen.append(n))
    assert [c.name for c in calls] == ["fc", "fc"] == seen
    assert calls[0].input_shape == (2, 4) and calls[0].macs_per_sample == 16


def test_attention_is_costed_as_gemms_per_head() -> None:
    attn = nn.MultiheadAttention(24, num_heads=3, batch_first=False, kdim=16, vdim=8)
    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = attn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mem = x[:, :5, :16].transpose(0, 1).contiguous()      # 5 key tokens of width 16
            val = x[:, :5, :8].transpose(0, 1).contiguous()       # and values of width 8
            return self.attn(x.transpose(0, 1), mem, val)[0]      # 7 query tokens of width 24, (T, N, E)

    shapes = {s.name: s for s in extract_workload(Cross(), torch.rand(2, 7, 24))}
    assert [n for n in shapes] == ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.scores", "attn.context",
                                   "attn.out_proj"]
    macs = {n: s.macs for n, s in shapes.items()}
    assert macs == {"attn.q_proj": 7 * 24 * 24, "attn.k_proj": 5 * 16 * 24, "attn.v_proj": 5 * 8 * 24,
                    "attn.scores": 3 * 7 * 8 * 5, "attn.context": 3 * 7 * 5 * 8, "attn.out_proj": 7 * 24 * 24}
    assert shapes["attn.scores"].weight_count == 3 * 5 * 8  # one head's keys per group

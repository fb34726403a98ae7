"""Sparse-difference fault campaigns and their Lipschitz certificates: counts equal patching the weight and
running the whole model on user-style models (float and int8, in-place activations), certificates are sound
bounds and skip pairs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.resilience import (
    FLOAT32,
    campaign_correct_counts,
    fault_correct_counts,
    random_fault_sites,
    stored_weights,
)
from crosslayer.resilience.batched import faults_by_position, run_campaign
from crosslayer.resilience.delta import delta_plan
from crosslayer.resilience.lipschitz import conv_norms, margin_radius
from small_models import PlainCNN, UserNet, user_net


def _faults(model: nn.Module, n: int, seed: int, scale: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``n`` single-weight faults per Conv2d / Linear: a mix of small and large weight changes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w: torch.Tensor = m.weight  # type: ignore[assignment]
            idx, _ = random_fault_sites(w.numel(), FLOAT32, n, g)
            mag = torch.logspace(-4, 1, n)[torch.randperm(n, generator=g)] * scale
            out[name] = (idx, w.detach().reshape(-1)[idx] + mag * torch.sign(torch.randn(n, generator=g)))
    return out


def _direct(model: nn.Module, faults: dict[str, tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
            y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {n: fault_correct_counts(model, n, i, v, x, y, method="direct") for n, (i, v) in faults.items()}


@pytest.mark.parametrize("case", ["user", "user_inplace", "user_int8", "plain"])
def test_campaign_equals_direct_on_user_models(case: str) -> None:
    net = user_net(inplace=case == "user_inplace", cls=PlainCNN if case == "plain" else UserNet)
    x = torch.randn(48, 3, 8, 8)
    if case == "user_int8":
        net = quantize_model(copy.deepcopy(net), FixedPointSpec(bits=8, per_channel=True), FixedPointSpec(bits=8))
        with calibrating(net):
            net(torch.randn(64, 3, 8, 8))
        net.eval()
    with stored_weights(net):  # as the campaigns run: layers compute with their stored (dequantized) weights
        with torch.no_grad():
            y = net(x).argmax(1)  # labels = clean predictions: a fault can only lower a count
        faults = _faults(net, 6, 1, 1.0)
        clean, fast = campaign_correct_counts(net, faults, x, y, budget_elems=1 << 15, max_faults_per_pass=4)
        ref = _direct(net, faults, x, y)
    assert clean == 48
    for name in faults:
        assert torch.equal(fast[name], ref[name]), (case, name)
    assert min(int(c.min()) for c in fast.values()) < 48  # some faults do change predictions


def test_certificates_skip_pairs_without_changing_counts() -> None:
    net = user_net(cls=PlainCNN)
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    faults = _faults(net, 8, 2, 0.5)
    plan = delta_plan(net, list(faults))
    assert plan is not None and plan.probe(x[:1])
    counts = {}
    for certify in (True, False):
        c = {n: torch.zeros(8, dtype=torch.long) for n in faults}
        run_campaign(plan, faults, x, y, c, budget_elems=1 << 16, max_faults_per_pass=8, certify=certify)
        counts[certify] = c
    for name in faults:
        assert torch.equal(counts[True][name], counts[False][name]), name
    assert torch.equal(counts[True]["c1"], _direct(net, {"c1": faults["c1"]}, x, y)["c1"])
    # the certificates settle most pairs of the small changes: fewer pairs reach the end of the network
    plan.prepare_certificates(x[:1])
    with torch.inference_mode():
        clean = list(plan.capture(x))
    radius = margin_radius(clean[plan.index[plan.out_node]], plan.head)  # type: ignore[arg-type]
    pos, delta = faults_by_position(net.c1.weight, *faults["c1"], torch.device("cpu"))
    small = delta.abs().argsort()[:4]
    with torch.inference_mode():
        fault, _, _ = plan.predictions("c1", clean, tuple(t[small] for t in pos), delta[small], radius)
        all_pairs, _, _ = plan.predictions("c1", clean, tuple(t[small] for t in pos), delta[small], None)
    assert all_pairs.numel() == 4 * 64 and fault.numel() < all_pairs.numel() // 2


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), [(1, 1, 1, 1), (2, 0, 1, 1), (1, 2, 2, 2)])
def test_conv_norm_bounds_hold(stride: int, padding: int, dilation: int, groups: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False)
    full, per = conv_norms(conv, (9, 9))
    v = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        for _ in range(200):  # power iteration: a lower estimate of the operator norm
            u = conv(v)
            v = torch.nn.grad.conv2d_input(v.shape, conv.weight, u, stride, padding, dilation, groups)
            v = v / v.norm()
        est = float(conv(v).norm())
        assert est <= full
        for c in range(4):  # a change confined to input channel c
            d = torch.zeros(1, 4, 9, 9)
            d[0, c] = torch.randn(9, 9)
            assert float(conv(d).norm()) <= float(per[c].sqrt()) * float(d.norm()) + 1e-6


def test_margin_radius_certifies_only_what_it_should() -> None:
    head = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    logits = torch.tensor([[5.0, 1.0, 0.0], [1.0, 1.0, 0.0], [float("nan"), 0.0, 0.0]])
    r = margin_radius(logits, head)
    assert 2.0 < float(r[0]) < 5.0 / 2**0.5  # min over classes of (margin - tol) / ||w_p - w_j||
    assert float(r[1]) < 0 and float(r[2]) == float("-inf")  # a tie and a NaN are never certified


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c(x)) * self.scale + x


def test_nested_modules_and_buffers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(_Block(), nn.MaxPool2d(2)), nn.Flatten(),
                        nn.Linear(4 * 14 * 14, 10)).eval()
    x = torch.rand(30, 1, 28, 28)
    with torch.no_grad():
        y = net(x).argmax(1)
    faults = _faults(net, 5, 3, 2.0)
    assert set(faults) == {"0", "1.0.c", "3"}
    clean, fast = campaign_correct_counts(net, faults, x, y)
    assert clean == 30
    for name, want in _direct(net, faults, x, y).items():
        assert torch.equal(fast[name], want), name


def test_chain_gain_bounds_real_logit_changes() -> None:
    net = user_net(cls=PlainCNN)
    x = torch.randn(16, 3, 8, 8)
    plan = delta_plan(net, ["c1", "c2", "fc1"])
    assert plan is not None and plan.probe(x[:1])
    plan.prepare_certificates(x[:1])
    head = net.fc2.weight.detach()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean = net(x)
        p = clean.argmax(1)
        for layer, shape in (("c1", (8, 8, 8)), ("c2", (12, 4, 4)), ("fc1", (16,))):
            gain = plan.gains[plan.cuts[layer]]
            for _ in range(20):
                ch = int(torch.randint(0, shape[0], (1,), generator=g))
                d = torch.zeros(16, *shape)
                d[:, ch] = torch.randn(16, *shape[1:], generator=g) * float(torch.rand(1, generator=g)) * 3
                h = net.get_submodule(layer).register_forward_hook(lambda _m, _i, out, d=d: out + d)
                moved = net(x)
                h.remove()
                norms = d.reshape(16, -1).norm(dim=1)
                bound = gain.bound(norms, torch.full((16,), ch), 1, 1)  # change confined to one channel / feature
                margin_change = (moved - clean) - (moved - clean).gather(1, p[:, None])  # d(y_j - y_p)
                dist = (head[p][:, None, :] - head[None]).norm(dim=-1)
                assert bool((margin_change.abs() <= dist * bound[:, None] + 1e-5).all()), layer

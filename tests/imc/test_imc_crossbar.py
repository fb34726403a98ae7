"""Crossbar layers: exact with ideal devices and converters, bounded converter error, seeded chips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.errors import StageError
from crosslayer.imc import CrossbarLayer, CrossbarSpec, crossbar_layers, to_crossbar
from crosslayer.imc.crossbar import adc_quantize, block_diagonal, dac_encode, dac_quantize
from crosslayer.train import evaluate

IDEAL = CrossbarSpec(levels=2**22, dac_bits=0, adc_bits=0, rows=16, cols=8)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 2, dilation=2),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 5)).eval()


def test_ideal_crossbar_matches_digital_layers() -> None:
    net = _net()
    x = torch.randn(7, 3, 8, 8)
    cb = to_crossbar(net, IDEAL, seed=3)
    assert [n for n, _ in crossbar_layers(cb)] == ["0", "2", "4"]
    with torch.no_grad():
        assert torch.allclose(cb(x), net(x), atol=1e-4)
    layer = dict(crossbar_layers(cb))["2"]
    assert layer.n_tiles == 2  # 6 * 2 * 2 = 24 inputs on 16-row tiles
    assert torch.allclose(layer.effective_weight(), net[2].weight, atol=1e-5)


@pytest.mark.parametrize(("cin", "cout", "groups"), [(6, 6, 6), (6, 12, 6), (8, 4, 2)])
def test_grouped_and_depthwise_convs_map_block_diagonally(cin: int, cout: int, groups: int) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups).eval()
    x = torch.randn(3, cin, 6, 6)
    cb = to_crossbar(nn.Sequential(conv), IDEAL, seed=0)
    layer = cb[0]
    assert isinstance(layer, CrossbarLayer) and layer.groups == groups
    assert layer.in_features == cin * 9 and layer.out_features == cout
    with torch.no_grad():
        assert torch.allclose(cb(x), conv(x), atol=1e-4)
    assert torch.allclose(layer.effective_weight(), conv.weight, atol=1e-5)
    # off-block cells hold no device: nothing outside the diagonal blocks conducts
    mask = block_diagonal(torch.ones(cout, cin * 9 // groups), groups).t()
    assert bool((layer.w_norm[mask == 0] == 0).all())
    noisy = to_crossbar(nn.Sequential(conv), CrossbarSpec(d2d_sigma=0.3, rows=16, cols=8), seed=0)[0]
    assert bool((noisy.w_norm[mask == 0] == 0).all())


def test_dac_and_adc_quantizers() -> None:
    x = torch.linspace(-1, 1, 1001)
    q = dac_quantize(x, 4)
    assert len(torch.unique(q)) == 15 and float((q - x).abs().max()) <= 0.5 / 7 + 1e-6
    codes, scale = dac_encode(torch.tensor([[2.0, -4.0], [0.0, 0.0]]), 0)
    assert codes.tolist() == [[0.5, -1.0], [0.0, 0.0]] and scale.flatten().tolist() == [4.0, 1.0]
    ps = torch.tensor([-3.0, -0.26, 0.1, 0.74, 5.0])
    out = adc_quantize(ps.clone(), 1.0, 3)  # steps of 1/3, clipped at +-1
    assert torch.allclose(out, torch.tensor([-1.0, -1 / 3, 0.0, 2 / 3, 1.0]))
    assert torch.equal(adc_quantize(ps.clone(), 1.0, 0), ps)


def test_converter_error_is_bounded_and_shrinks_with_bits() -> None:
    lin = nn.Linear(40, 6)
    x = torch.randn(50, 40)
    ref = lin(x).detach()
    errs = []
    for bits in (4, 6, 8, 10):
        spec = CrossbarSpec(levels=2**22, dac_bits=bits, adc_bits=bits, rows=16)
        cb = to_crossbar(nn.Sequential(lin), spec, calibration=x)
        errs.append(float((cb(x) - ref).abs().max()))
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.02 * float(ref.abs().max())


def test_calibrated_adc_range_is_the_largest_partial_sum() -> None:
    lin = nn.Linear(20, 3, bias=False)
    x = torch.rand(30, 20)
    cb = to_crossbar(nn.Sequential(lin), CrossbarSpec(levels=2**22, rows=20, adc_bits=8), calibration=x)
    layer = dict(crossbar_layers(cb))["0"]
    xn = x / x.abs().amax(1, keepdim=True)
    wn = lin.weight.detach() / lin.weight.detach().abs().max()
    assert float(layer.adc_fs[0]) == pytest.approx(float((xn @ wn.t()).abs().max()), rel=1e-3)
    fixed = to_crossbar(nn.Sequential(lin), CrossbarSpec(adc_full_scale=2.5), calibration=x)
    assert dict(crossbar_layers(fixed))["0"].full_scale().tolist() == [2.5]


def test_seeded_chips(lenet5_trained: nn.Module, mnist_small) -> None:
    spec = CrossbarSpec(d2d_sigma=0.3)
    a = to_crossbar(lenet5_trained, spec, seed=5)
    b = to_crossbar(lenet5_trained, spec, seed=5)
    c = to_crossbar(lenet5_trained, spec, seed=6)
    x = mnist_small.test.images[:20]
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    # the original model is untouched
    assert isinstance(lenet5_trained.conv1, nn.Conv2d) and not isinstance(lenet5_trained.conv1, CrossbarLayer)


def test_accuracy_ideal_close_and_falls_with_variation(lenet5_trained: nn.Module, mnist_small) -> None:
    test = mnist_small.test.subset(500)
    cal = mnist_small.train.images[:128]
    digital = evaluate(lenet5_trained, test).accuracy
    default = evaluate(to_crossbar(lenet5_trained, CrossbarSpec(), calibration=cal), test).accuracy
    noisy = evaluate(to_crossbar(lenet5_trained, CrossbarSpec(d2d_sigma=1.0), calibration=cal), test).accuracy
    stuck = evaluate(to_crossbar(lenet5_trained, CrossbarSpec(stuck_on_rate=0.05), calibration=cal), test).accuracy
    assert abs(default - digital) <= 0.01
    assert noisy < digital - 0.1 and stuck < digital - 0.03


def test_bad_models_and_layers() -> None:
    with pytest.raises(StageError, match="no Linear or Conv2d"):
        to_crossbar(nn.Sequential(nn.ReLU()), CrossbarSpec())
    with pytest.raises(StageError, match="no Linear/Conv2d layer named 'fc9'"):
        to_crossbar(nn.Sequential(nn.Linear(2, 2)), CrossbarSpec(), layers=["fc9"])
    with pytest.raises(StageError, match="numeric zero padding"):
        to_crossbar(nn.Sequential(nn.Conv2d(4, 4, 3, padding="same")), CrossbarSpec())
    partial = to_crossbar(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), CrossbarSpec(), layers=["1"])
    assert not isinstance(partial[0], CrossbarLayer) and isinstance(partial[1], CrossbarLayer)

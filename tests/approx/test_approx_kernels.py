"""Fast approximate kernels: exact table factorization, and bit-exactness of every library multiplier
against the integer reference on plain / strided / dilated / grouped / depthwise convs and linear
layers, with both kernels, symmetric and asymmetric codes, non-contiguous inputs and a user-style model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from crosslayer.approx import ApproxLayer, Multiplier, approximate_model, get_multiplier, integer_reference_model
from crosslayer.approx.catalog import DEFAULT_NAMES
from crosslayer.approx.factor import factorize, table_factors
from crosslayer.approx.kernels import ConvGeometry, DepthwiseLookupKernel, build_kernel
from crosslayer.errors import StageError
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from small_models import user_net

EXTRA_NAMES = ("trunc1", "trunc10", "trunc14", "bam_h4_v8", "bam_h7_v0", "drum2", "drum7", "ppp3_4", "ppp0_7",
               "etm1", "etm7")
SIGNED = np.arange(-128, 128)


def _random_low_rank(seed: int, rank: int) -> Multiplier:
    g = np.random.default_rng(seed)
    u = g.integers(-9, 10, (256, rank))
    v = g.integers(-9, 10, (rank, 256))
    return Multiplier(name=f"lowrank{rank}", table=(u @ v).astype(np.int64), signed=True)


def _random_table(seed: int) -> Multiplier:
    g = np.random.default_rng(seed)
    table = SIGNED[:, None] * SIGNED[None, :] + g.integers(-300, 301, (256, 256))
    return Multiplier(name="noisy", table=table.astype(np.int64), signed=True)


def _all_multipliers() -> list[Multiplier]:
    return [get_multiplier(n) for n in (*DEFAULT_NAMES, *EXTRA_NAMES)] + [_random_low_rank(1, 3), _random_table(2)]


def test_factorization_is_exact_and_small_for_structured_designs() -> None:
    ranks = {}
    for name in ("exact", "drum4", "ppp0_2", "kulkarni", "trunc8", "etm4", "mitchell"):
        t = get_multiplier(name).product_table((-128, 127), (-128, 127))
        fac = factorize(t, -128, -128)
        ranks[name] = None if fac is None else fac.rank
        if fac is not None:
            assert np.array_equal(fac.weight @ fac.act, fac.denominator * t)
    assert ranks == {"exact": 1, "drum4": 1, "ppp0_2": 1, "kulkarni": 2, "trunc8": 7, "etm4": 11, "mitchell": None}
    exact = factorize(SIGNED[:, None] * SIGNED[None, :], -128, -128)
    assert exact is not None and exact.identity
    lr = _random_low_rank(3, 4).table
    fac = factorize(lr, -128, -128)
    assert fac is not None and fac.rank == 4 and np.array_equal(fac.weight @ fac.act, fac.denominator * lr)
    assert factorize(_random_table(4).table, -128, -128) is None  # full rank: lookups
    assert factorize(np.zeros((256, 256), dtype=np.int64), -128, -128) is None
    assert table_factors(lr, -128, -128) is table_factors(lr.copy(), -128, -128)  # memoised on contents


def test_rational_factors_use_a_common_denominator() -> None:
    c = SIGNED.copy()
    c[129] = 2  # activation 1 is multiplied as 2: the first pivot column (a = 1) is 2w, so G(a) = a / 2
    t = (SIGNED[:, None] * c[None, :]).astype(np.int64)
    fac = factorize(t, -128, -128)
    assert fac is not None and fac.rank == 1 and fac.denominator == 2
    assert np.array_equal(fac.weight @ fac.act, 2 * t)
    q, x = _quantized_layer("linear", "sym")
    mult = Multiplier(name="half", table=t, signed=True)
    got = approximate_model(q, {"0": mult}, method="factors")(x)
    assert torch.equal(got, integer_reference_model(q, {"0": mult})(x))


LAYERS = {
    "conv": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1),
    "conv_dilated": lambda: nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2),
    "grouped": lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False),
    "depthwise": lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4),
    "depthwise_x2_strided": lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4),  # two outputs per channel
    "depthwise_dilated": lambda: nn.Conv2d(4, 4, (3, 2), padding=(2, 1), dilation=(2, 1), groups=4, bias=False),
    "linear": lambda: nn.Linear(20, 7),  # 5 rows: lookups gather per MAC
    "linear_rows": lambda: nn.Linear(20, 7),  # 300 rows: lookups through the chunked tables
}
SPECS = {  # (weights, activations): symmetric signed per channel; asymmetric weights and unsigned activations
    "sym": (FixedPointSpec(bits=8, per_channel=True), FixedPointSpec(bits=8)),
    "asym": (FixedPointSpec(bits=8, symmetric=False), FixedPointSpec(bits=8, signed=False, symmetric=False)),
}


def _quantized_layer(kind: str, spec: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(LAYERS[kind]())
    q = quantize_model(net, *SPECS[spec])
    shape = {"linear": (5, 20), "linear_rows": (300, 20)}.get(kind, (3, 4, 9, 8))
    with calibrating(q):
        q(torch.randn(64, *shape[1:]) * 1.5)
    return q.eval(), torch.randn(*shape) * 2  # beyond the calibrated range: saturating codes too


@pytest.mark.parametrize("mult", _all_multipliers(), ids=lambda m: m.name)
def test_every_multiplier_is_bit_exact_with_every_kernel(mult: Multiplier) -> None:
    for kind in LAYERS:
        for spec in SPECS:
            if not mult.signed or spec == "sym":
                q, x = _quantized_layer(kind, spec)
            else:
                continue  # a signed table cannot take unsigned 0..255 activation codes
            want = integer_reference_model(q, {"0": mult})(x)
            for method in ("auto", "factors", "lookup"):
                try:
                    got = approximate_model(q, {"0": mult}, method=method)(x)
                except ValueError as exc:  # no exact low-rank factorization: only lookups apply
                    assert method == "factors" and "no exact low-rank" in str(exc)
                    continue
                assert torch.equal(got, want), (mult.name, kind, spec, method)
                assert got.is_contiguous()


def test_non_contiguous_inputs_give_contiguous_bit_exact_outputs() -> None:
    q, x = _quantized_layer("conv", "sym")
    big = torch.randn(3, 4, 9, 16)
    for inp in (x.to(memory_format=torch.channels_last), big[:, :, :, ::2], torch.randn(3, 4, 8, 9).transpose(2, 3)):
        assert not inp.is_contiguous()
        for name in ("exact", "drum4", "mitchell"):
            out = approximate_model(q, {"0": name})(inp)
            assert out.is_contiguous()
            assert torch.equal(out, integer_reference_model(q, {"0": name})(inp.contiguous()))


def test_user_style_model_is_bit_exact_end_to_end() -> None:
    net = user_net()
    q = quantize_model(copy.deepcopy(net), FixedPointSpec(bits=8, per_channel=True), FixedPointSpec(bits=8))
    x = torch.randn(6, 3, 8, 8)
    with calibrating(q):
        q(torch.randn(64, 3, 8, 8))
    q.eval()
    names = [n for n, m in q.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(names) == 12
    for mult in ("exact", "drum4", "etm4", "mitchell"):
        assignment = {n: mult for n in names}
        with torch.no_grad():
            got = approximate_model(q, assignment)(x)
            want = integer_reference_model(q, assignment)(x)
        assert torch.equal(got, want), mult
        if mult == "exact":
            assert torch.allclose(got, q(x), atol=1e-3)  # and the fake-quantized model agrees


def test_kernels_choose_factors_for_small_rank_and_lookups_otherwise() -> None:
    w = torch.randint(-127, 128, (6, 4, 3, 3))
    for name, want in (("exact", "factors"), ("drum4", "factors"), ("trunc4", "factors"), ("etm4", "lookup"),
                       ("mitchell", "lookup")):
        table = get_multiplier(name).product_table((-128, 127), (-128, 127))
        kern = build_kernel(w, table, -128, -128, None if w.dim() == 2 else _geo())
        assert kern.method == want, name
    dw = ConvGeometry(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), pads=(1, 1, 1, 1), groups=4)
    assert isinstance(build_kernel(torch.randint(-127, 128, (8, 1, 3, 3)), table, -128, -128, dw, "lookup"),
                      DepthwiseLookupKernel)  # one input channel per group: per-tap lookups
    with pytest.raises(ValueError, match="method must be"):
        build_kernel(w, table, -128, -128, _geo(), "fast")  # type: ignore[arg-type]
    q, _ = _quantized_layer("conv", "sym")
    with pytest.raises(StageError, match="method = 'fast'"):
        ApproxLayer(q[0], "drum4", "0", method="fast")  # type: ignore[arg-type]


def _geo() -> ConvGeometry:
    return ConvGeometry(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), pads=(1, 1, 1, 1), groups=1)


@pytest.mark.parametrize("kind", ["conv", "conv_dilated", "grouped", "linear_rows"])
def test_lookup_tables_split_along_the_weight_positions_stay_bit_exact(kind: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from crosslayer.approx import kernels

    monkeypatch.setattr(kernels, "_TABLE_CHUNK_ELEMS", 256 * 8 * 5)  # a few weight positions per table chunk
    q, x = _quantized_layer(kind, "sym")
    for name in ("mitchell", "etm4"):
        layer = approximate_model(q, {"0": name}, method="lookup")
        got = layer(x)
        kern = layer[0]._cache[1]
        assert kern.n_chunks > 1, (kind, kern.n_chunks)
        assert torch.equal(got, integer_reference_model(q, {"0": name})(x)), (kind, name)


def test_auto_times_both_kernels_once_and_keeps_the_faster_for_new_weights() -> None:
    torch.manual_seed(0)
    q = quantize_model(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)), FixedPointSpec(bits=8, per_channel=True),
                       FixedPointSpec(bits=8))
    x = torch.randn(4, 8, 12, 12)  # 576 output rows: timed
    with calibrating(q):
        q(x)
    q.eval()
    model = approximate_model(q, {"0": "trunc4"})  # exact rank 5: both kernels apply
    layer = model[0]
    small = layer(x[:1, :, :8, :8])  # 64 rows: the rank rule, nothing timed
    assert layer._cache[1].method == "factors" and layer._cache[1].choice is None and layer._tuned is None
    assert torch.equal(small, integer_reference_model(q, {"0": "trunc4"})(x[:1, :, :8, :8]))
    got = layer(x)
    kern = layer._cache[1]
    assert set(kern.seconds) == {"factors", "lookup"} and kern.choice == min(kern.seconds, key=kern.seconds.get)
    assert layer._tuned == kern.choice
    assert torch.equal(got, integer_reference_model(q, {"0": "trunc4"})(x))
    with torch.no_grad():
        layer.layer.weight.mul_(0.5)  # new weights: the kernel is rebuilt with the timed method, not re-timed
    again = layer(x)
    rebuilt = layer._cache[1]
    assert rebuilt is not kern and rebuilt.method == kern.choice and not isinstance(rebuilt, type(kern))
    halved = nn.Sequential(copy.deepcopy(layer.layer))  # approximate_model worked on a copy of q
    assert torch.equal(again, integer_reference_model(halved, {"0": "trunc4"})(x))
    drum = get_multiplier("drum4").product_table((-128, 127), (-128, 127))
    assert build_kernel(torch.randint(-127, 128, (4, 3)), drum, -128, -128, None).method == "factors"  # rank 1


def test_auto_skips_the_timing_when_the_lookup_tables_would_be_large(monkeypatch: pytest.MonkeyPatch) -> None:
    from crosslayer.approx import kernels

    monkeypatch.setattr(kernels, "_TABLE_CHUNK_ELEMS", 256 * 100)  # below this layer's 256 x 6 x 36 floats
    w = torch.randint(-127, 128, (6, 4, 3, 3))
    for name, want in (("trunc4", kernels.FactorKernel), ("etm4", kernels.LookupKernel)):  # ranks 5 and 11
        table = get_multiplier(name).product_table((-128, 127), (-128, 127))
        assert type(build_kernel(w, table, -128, -128, _geo())) is want, name

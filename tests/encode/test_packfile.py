import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from crosslayer.encode import PackFormatError, pack_model, packfile, read_packed, unpack_model, write_packed
from crosslayer.encode.graph import extract_ops
from crosslayer.errors import StageError
from crosslayer.models import SmallVGG
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model, weight_codes
from crosslayer.train import evaluate, predict


def _pruned_quantized(model, data, sparsity=0.9, bits=5):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                thr = m.weight.abs().flatten().kthvalue(int(sparsity * m.weight.numel())).values
                m.weight[m.weight.abs() <= thr] = 0
    quantize_model(model, FixedPointSpec(bits=bits), FixedPointSpec(bits=8, signed=False, symmetric=False))
    with calibrating(model):
        predict(model, data.train.images[:500])
    return model


def test_pack_roundtrip_bitexact_and_size_equals_accounting(lenet5_trained, mnist_small, tmp_path):
    model = _pruned_quantized(lenet5_trained, mnist_small)
    path = tmp_path / "m.xlm"
    acct = write_packed(path, model)
    assert path.stat().st_size == acct["bytes"] == sum(acct["total_bits"].values()) // 8
    per_layer = sum(sum(v.values()) for v in acct["layers"].values())
    header_only = 8 * (4 + 12) + 32  # magic, version/flags/count/arch length, crc
    assert per_layer + header_only < 8 * acct["bytes"], "architecture JSON is the rest of the header"
    assert set(acct["total_bits"]) >= {"values", "indices", "header"}
    restored = unpack_model(path.read_bytes())
    for name in ["conv1", "conv2", "fc1", "fc2"]:
        idx = ["conv1", None, "conv2", None, None, "fc1", None, "fc2"].index(name)
        got = weight_codes(restored, str(idx)).codes
        assert torch.equal(got, weight_codes(model, name).codes), name
    x = mnist_small.test.images[:300]
    assert torch.equal(predict(restored, x).argmax(1), predict(model, x).argmax(1))
    assert evaluate(restored, mnist_small.test).accuracy == pytest.approx(
        evaluate(model, mnist_small.test).accuracy, abs=1e-9)
    # 90 % sparse, 5-bit LeNet-5: far below the 1.7 MB of fp32 weights.
    assert acct["bytes"] < 60_000


def test_float_and_batchnorm_model_roundtrip():
    torch.manual_seed(0)
    model = SmallVGG().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    data, _ = pack_model(model)
    restored = unpack_model(data)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(restored(x), model(x), rtol=1e-4, atol=1e-5)


def test_non_sequential_model_is_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.a(x)

    with pytest.raises(StageError, match="non-sequential"):
        extract_ops(Residual())


@pytest.fixture(scope="module")
def packed_bytes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[1].weight[torch.rand_like(model[1].weight) < 0.8] = 0
    quantize_model(model, FixedPointSpec(bits=6))
    return pack_model(model)[0]


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_reader_rejects_defects_clearly(packed_bytes):
    data = packed_bytes
    read_packed(data)
    cases = {
        "truncated": data[: len(data) // 2],
        "corrupted": data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],
        "bad magic": b"NOPE" + data[4:],
        "version": _recrc(data[:4] + struct.pack("<H", 99) + data[6:-4]),
        "oversized": _recrc(data[:8] + struct.pack("<I", 4000) + data[12:-4]),
        "empty": b"",
    }
    expected = {"truncated": "checksum|truncated", "corrupted": "checksum", "bad magic": "magic",
                "version": "version 99", "oversized": "truncated|claims|layer", "empty": "too short"}
    import re

    for name, bad in cases.items():
        with pytest.raises(PackFormatError) as exc:
            read_packed(bad)
        assert re.search(expected[name], str(exc.value)), (name, str(exc.value))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_reader_never_crashes(packed_bytes, data):
    """Hostile input: random mutations, with the checksum fixed up so the parser itself is exercised."""
    raw = bytearray(packed_bytes[:-4])
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 64))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    blob = _recrc(bytes(raw)) if data.draw(st.booleans()) else bytes(raw)
    try:
        _, layers = read_packed(blob)
        unpack_model(blob)  # the rebuild must not fail on anything the reader accepted
    except PackFormatError:
        return
    # If the mutation left a valid file, what it decodes matches the shapes it declares.
    assert all(lc.codes.size == int(np.prod(lc.shape)) <= (1 << 24) for lc in layers)


# ---------------------------------------------------------------- hostile files, one defect class each
def _lin(name, out_f, in_f, *, bits=6, seed=0):
    codes = np.random.default_rng(seed).integers(1, 1 << (bits - 1), size=out_f * in_f).astype(np.int64)
    return packfile.LayerCodes(name, "linear", (out_f, in_f), codes, bits, True, np.full(1, 0.01, np.float32),
                               np.zeros(1, np.float32), np.zeros(out_f, np.float32))


def _conv(name, out_c, in_c, k=3, *, bits=6):
    codes = np.random.default_rng(1).integers(1, 1 << (bits - 1), size=out_c * in_c * k * k).astype(np.int64)
    return packfile.LayerCodes(name, "conv", (out_c, in_c, k, k), codes, bits, True, np.full(1, 0.01, np.float32),
                               np.zeros(1, np.float32), np.zeros(out_c, np.float32),
                               conv={"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)})


def _arch():
    geo = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}
    return [{"kind": "conv", "name": "c1", "params": geo}, {"kind": "relu", "name": "", "params": {}},
            {"kind": "maxpool", "name": "", "params": {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]}},
            {"kind": "flatten", "name": "", "params": {}}, {"kind": "linear", "name": "f1", "params": {}}]


def _layers():
    return [_conv("c1", 4, 1), _lin("f1", 10, 4 * 13 * 13)]


def _craft(arch, layers, *, flags=0, n_layers=None):
    """A packed file written field by field (valid CRC), so each reader check is reached on its own."""
    w = packfile._Writer()
    raw = arch if isinstance(arch, bytes) else json.dumps(arch).encode("utf-8")
    w.put(packfile.MAGIC, "header")
    w.fmt("HHII", packfile.FORMAT_VERSION, flags, len(layers) if n_layers is None else n_layers, len(raw))
    w.put(raw, "header")
    for lc in layers:
        packfile._write_layer(w, lc, 5)
    return _recrc(bytes(w.buf))


def test_crafted_file_is_valid_and_runs():
    model = unpack_model(_craft(_arch(), _layers()))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def _edit(i, **changes):
    arch = _arch()
    arch[i] = {**arch[i], **changes}
    return arch


ARCH_DEFECTS = {
    # mangled kinds / parameters (formerly StageError / KeyError out of graph.build_sequential and Op.param)
    "unknown kind": (_edit(2, kind="raxpool"), "unknown op kind 'raxpool'"),
    "missing parameter": (_edit(2, params={"stride": [2, 2], "padding": [0, 0]}), "needs"),
    "extra parameter": (_edit(1, params={"inplace": [1, 1]}), "needs"),
    # valid JSON, wrong types (formerly TypeError / AttributeError or a broken model)
    "string in a pair": (_edit(2, params={"kernel": ["2", 2], "stride": [2, 2], "padding": [0, 0]}), "integers"),
    "float in a pair": (_edit(2, params={"kernel": [2.0, 2], "stride": [2, 2], "padding": [0, 0]}), "integers"),
    "bool in a pair": (_edit(2, params={"kernel": [True, 2], "stride": [2, 2], "padding": [0, 0]}), "integers"),
    "scalar parameter": (_edit(2, params={"kernel": 2, "stride": [2, 2], "padding": [0, 0]}), "integers"),
    "negative padding": (_edit(0, params={"stride": [1, 1], "padding": [-1, 0], "dilation": [1, 1]}), "integers"),
    "huge stride": (_edit(0, params={"stride": [1 << 40, 1], "padding": [0, 0], "dilation": [1, 1]}), "integers"),
    "zero pool stride": (_edit(2, params={"kernel": [2, 2], "stride": [0, 2], "padding": [0, 0]}), "positive"),
    "pool padding over half the kernel": (_edit(2, params={"kernel": [2, 2], "stride": [2, 2], "padding": [2, 0]}),
                                          "half the kernel"),
    "kind not a string": (_edit(1, kind=7), "strings"),
    "name not a string": (_edit(0, name=["c1"]), "strings"),
    "params not an object": (_edit(1, params=[]), "params an object"),
    "unknown op key": (_edit(1, extra=1), "keys kind / name / params"),
    "op not an object": ([*_arch()[:1], "relu", *_arch()[2:]], "must be an object"),
    "top level not a list": ({"kind": "relu"}, "list of 1"),
    "empty list": ([], "list of 1"),
    "deep nesting": (b"[" * 200_000 + b"]" * 200_000, "malformed"),
    "not UTF-8": (b"\xff\xfe[]", "malformed"),
    "not JSON": (b'[{"kind": ', "malformed"),
    "unnamed conv": (_edit(0, name=""), "need one"),
    "named relu": (_edit(1, name="c1"), "other ops none"),
    # the op list against the layer records
    "conv geometry disagrees": (_edit(0, params={"stride": [2, 2], "padding": [0, 0], "dilation": [1, 1]}),
                                "disagrees with the architecture"),
    "kind swapped": (_edit(0, kind="linear", params={}), "record of a conv layer where the architecture has a linear"),
    "records out of order": ([{**_arch()[4]}, *_arch()[1:4], {**_arch()[0]}], "record 'c1' where the architecture"),
    "conv after flatten": ([_arch()[3], *_arch()[0:3], _arch()[4]], "cannot follow a flatten"),
    "pool after flatten": ([*_arch()[0:2], _arch()[3], _arch()[2], _arch()[4]], "pooling cannot follow a flatten"),
}


@pytest.mark.parametrize("case", sorted(ARCH_DEFECTS))
def test_reader_rejects_hostile_architecture(case):
    arch, pattern = ARCH_DEFECTS[case]
    with pytest.raises(PackFormatError, match=pattern):
        unpack_model(_craft(arch, _layers()))


def _bad_layers(case):
    c1, f1 = _layers()
    if case == "one-bit weights":            # formerly ConfigError out of FixedPointSpec
        f1.bits, f1.codes = 1, np.zeros_like(f1.codes)
    elif case == "one-bit activations":
        f1.act = {"bits": 1, "signed": False, "symmetric": False, "lo": 0.0, "hi": 1.0}
    elif case == "activation range wider than float32":
        f1.act = {"bits": 8, "signed": False, "symmetric": False, "lo": -3e38, "hi": 3e38}
    elif case == "zero conv stride":         # formerly a model that fails only when run
        c1.conv = {"stride": (0, 1), "padding": (0, 0), "dilation": (1, 1)}
    elif case == "conv geometry on a linear":
        f1.conv = {"stride": (2, 2), "padding": (0, 0), "dilation": (1, 1)}
    elif case == "NaN scale":
        f1.scale = np.array([np.nan], np.float32)
    elif case == "zero scale":
        f1.scale = np.zeros(1, np.float32)
    elif case == "infinite bias":
        f1.bias = np.full(10, np.inf, np.float32)
    elif case == "non-finite float weight":
        w = np.ones(f1.codes.size, np.float32)
        w[3] = np.nan
        f1.bits, f1.signed, f1.codes = 32, False, w.view(np.uint32).astype(np.int64)
    elif case == "linear features not a multiple of the channels":
        f1 = _lin("f1", 10, 4 * 13 * 13 + 1)
    elif case == "conv channels disagree":
        return [c1, _conv("c2", 4, 5), f1]
    elif case == "linear features disagree":
        return [c1, f1, _lin("f2", 3, 11)]
    elif case == "duplicate names":
        return [c1, f1, _lin("f1", 10, 10)]
    elif case == "huge shape":
        c1.shape = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    return [c1, f1]


def _arch_for(case):
    arch = _arch()
    if case == "conv channels disagree":
        arch.insert(1, {**arch[0], "name": "c2"})
    elif case in ("linear features disagree", "duplicate names"):
        arch.append({"kind": "linear", "name": "f2" if case == "linear features disagree" else "f1", "params": {}})
    return arch


LAYER_DEFECTS = {
    "one-bit weights": "bad bit width 1", "one-bit activations": "bad activation quantization",
    "activation range wider than float32": "bad activation quantization",
    "zero conv stride": "must be positive", "conv geometry on a linear": "linear layer with conv geometry",
    "NaN scale": "non-finite scale", "zero scale": "non-positive weight scale", "infinite bias": "non-finite bias",
    "non-finite float weight": "non-finite weight",
    "linear features not a multiple of the channels": "not a multiple of the 4 channels",
    "conv channels disagree": "takes 5 channels, the layer before gives 4",
    "linear features disagree": "takes 11 features, the layer before gives 10",
    "duplicate names": "more than once", "huge shape": "out of bounds",
}


@pytest.mark.parametrize("case", sorted(LAYER_DEFECTS))
def test_reader_rejects_hostile_layer_records(case):
    with pytest.raises(PackFormatError, match=LAYER_DEFECTS[case]):
        unpack_model(_craft(_arch_for(case), _bad_layers(case)))


def test_reader_rejects_header_flags_layer_count_and_total_size(monkeypatch):
    with pytest.raises(PackFormatError, match="flags"):
        read_packed(_craft(_arch(), _layers(), flags=1))
    with pytest.raises(PackFormatError, match="header says 3 layers"):
        read_packed(_craft(_arch(), _layers(), n_layers=3))
    monkeypatch.setattr(packfile, "MAX_TOTAL_NUMEL", 1000)
    with pytest.raises(PackFormatError, match="past 1000 weights"):
        read_packed(_craft(_arch(), _layers()))


@pytest.mark.parametrize("enc", [packfile.ENC_CSR, packfile.ENC_CSC, packfile.ENC_BITMASK])
@pytest.mark.parametrize("kept", ["column 0", "rows 0-9", "columns 0-9"])
def test_sparse_layer_with_long_zero_runs_roundtrips(monkeypatch, enc, kept):
    """Rows that end in long zero runs (formerly rejected by the size bound), through each sparse encoding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    with torch.no_grad():
        w = model[1].weight
        if kept == "column 0":
            w[:, 1:] = 0
        elif kept == "rows 0-9":
            w[10:] = 0
        else:
            w[:, 10:] = 0
    quantize_model(model, FixedPointSpec(bits=5))
    every = packfile._sparse_candidates
    monkeypatch.setattr(packfile, "_sparse_candidates", lambda *a: {enc: every(*a)[enc]})
    data, acct = pack_model(model)
    bits = acct["layers"]["1"]
    if enc == packfile.ENC_BITMASK:
        assert bits["indices"] >= 800 * 500 and bits.get("pointers", 0) == 0
    else:
        assert bits["pointers"] > 0
    _, layers = read_packed(data)
    np.testing.assert_array_equal(layers[0].codes, weight_codes(model, "1").codes.numpy().ravel())
    x = torch.rand(3, 800)
    torch.testing.assert_close(unpack_model(data)(x), model(x))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False) | st.text(max_size=8)
                    | st.sampled_from(["conv", "linear", "relu", "maxpool", "avgpool", "flatten", "c1", "f1",
                                       "kernel", "stride", "padding", "dilation"]),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["kind", "name", "params", "kernel", "stride", "padding", "dilation", "x"]),
                        inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_architecture_json(data):
    """Valid JSON of any shape in place of the op list (CRC valid): a model or a PackFormatError, nothing else."""
    arch = _arch()
    i = data.draw(st.integers(0, len(arch)))
    if i == len(arch):
        arch = data.draw(JSON)
    else:
        key = data.draw(st.sampled_from(["kind", "name", "params"]))
        arch[i][key] = data.draw(JSON)
    try:
        model = unpack_model(_craft(arch, _layers()))
    except PackFormatError as exc:
        assert str(exc)
        return
    # Accepted: the edit kept a valid op list (e.g. an equal value), so the model has all five ops.
    assert [type(m).__name__ for m in model] == ["QuantConv2d", "ReLU", "MaxPool2d", "Flatten", "QuantLinear"]


def test_writer_refuses_what_the_reader_would_reject():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(StageError, match="non-finite weight"):
        pack_model(model)
    with pytest.raises(StageError, match="between|integers in"):
        pack_model(nn.Sequential(nn.MaxPool2d(300), nn.Flatten(), nn.Linear(4, 3)))


def test_zero_points_are_stored_only_when_non_zero():
    torch.manual_seed(0)
    sizes = {}
    for symmetric in (True, False):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        quantize_model(model, FixedPointSpec(bits=6, signed=symmetric, symmetric=symmetric, per_channel=True))
        data, acct = pack_model(model)
        restored = unpack_model(data)
        for idx in ("1", "3"):
            want = weight_codes(model, idx)
            got = weight_codes(restored, idx)
            assert torch.equal(got.codes, want.codes)
            assert torch.equal(got.zero_point.reshape(-1), want.zero_point.reshape(-1).float())
        x = torch.rand(5, 64)
        torch.testing.assert_close(restored(x), model(x))
        assert bool((weight_codes(model, "1").zero_point != 0).any()) is not symmetric
        sizes[symmetric] = acct["total_bits"]["header"]
    # per-channel zero points: one float32 per output channel of each layer (32 + 10)
    assert sizes[False] - sizes[True] == 32 * (32 + 10)

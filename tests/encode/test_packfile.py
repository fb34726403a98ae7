"""The packed file, format 3: bit-exact codes and exact accounting, and a reader that stays safe on hostile input
(truncation, corruption, mangled records, and an embedded ONNX graph that is malformed or unsafe)."""

import re
import struct
import zlib

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from crosslayer.encode import PackFormatError, pack_model, packfile, read_packed, unpack_model
from crosslayer.encode.onnx_graph import OnnxModule
from crosslayer.errors import StageError
from crosslayer.models import LeNet5
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model, weight_codes
from crosslayer.train import predict

X = torch.rand(4, 1, 28, 28)


def _pruned_quantized(model, images, sparsity=0.9, bits=5):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                thr = m.weight.abs().flatten().kthvalue(int(sparsity * m.weight.numel())).values
                m.weight[m.weight.abs() <= thr] = 0
    quantize_model(model, FixedPointSpec(bits=bits), FixedPointSpec(bits=8, signed=False, symmetric=False))
    with calibrating(model):
        predict(model, images)
    return model


def test_pack_roundtrip_bitexact_and_size_equals_accounting(lenet5_trained, mnist_small):
    model = _pruned_quantized(lenet5_trained, mnist_small.train.images[:500])
    data, acct = pack_model(model, mnist_small.test.images[:2])
    assert len(data) == acct["bytes"] == sum(acct["total_bits"].values()) // 8
    assert set(acct["total_bits"]) >= {"values", "indices", "header", "graph", "bias"}
    assert acct["graph_kind"] == "int8 QDQ"  # 5-bit codes fit int8; uint8 inputs with their zero point
    packed = read_packed(data)
    for lc in packed.layers:
        assert np.array_equal(lc.codes, weight_codes(model, lc.name.removesuffix(".weight")).codes.numpy().ravel())
    x = mnist_small.test.images[:300]
    fresh = unpack_model(data, LeNet5())  # the user's module, with layer types and weights restored
    assert torch.equal(predict(fresh, x).argmax(1), predict(model, x).argmax(1))
    assert all(torch.equal(weight_codes(fresh, n).codes, weight_codes(model, n).codes) for n in ("conv1", "fc2"))
    assert isinstance(unpack_model(data), OnnxModule)
    # 90 % sparse, 5-bit LeNet-5: far below the 1.7 MB of fp32 weights.
    assert acct["bytes"] < 60_000


def test_int8_graph_codes_are_referenced_not_duplicated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    quantize_model(model, FixedPointSpec(bits=8, per_channel=True), FixedPointSpec(bits=8))
    with calibrating(model):
        model(torch.rand(64, 1, 28, 28))
    data, acct = pack_model(model, X)
    packed = read_packed(data)
    assert acct["graph_kind"] == "int8 QDQ"
    assert {tuple(v) for v in packed.meta["refs"].values()} >= {("codes", "1.weight"), ("codes", "3.weight")}
    assert acct["total_bits"]["graph"] < 8 * 4000  # the graph holds no weights
    x = torch.rand(16, 1, 28, 28)
    torch.testing.assert_close(unpack_model(data)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def packed_bytes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[1].weight[torch.rand_like(model[1].weight) < 0.8] = 0
    quantize_model(model, FixedPointSpec(bits=6))
    return pack_model(model, X)[0]


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_reader_rejects_defects_clearly(packed_bytes):
    data = packed_bytes
    read_packed(data)
    cases = {
        "truncated": data[: len(data) // 2],
        "corrupted": data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],
        "bad magic": b"NOPE" + data[4:],
        "version": _recrc(data[:4] + struct.pack("<H", 2) + data[6:-4]),
        "oversized": _recrc(data[:8] + struct.pack("<I", 5000) + data[12:-4]),
        "empty": b"",
    }
    expected = {"truncated": "checksum|truncated", "corrupted": "checksum", "bad magic": "magic",
                "version": "version 2 is not supported", "oversized": "claims", "empty": "too short"}
    for name, bad in cases.items():
        with pytest.raises(PackFormatError) as exc:
            read_packed(bad)
        assert re.search(expected[name], str(exc.value)), (name, str(exc.value))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
        packed = read_packed(blob)
        unpack_model(blob)(torch.rand(2, 1, 28, 28))  # what the reader accepted must load and run
    except PackFormatError:
        return
    except Exception as exc:  # only a mutation that kept the file valid but changed what the graph computes
        assert "ONNX Runtime" in str(exc), exc
        return
    assert all(lc.codes.size == int(np.prod(lc.shape)) <= (1 << 24) for lc in packed.layers)


# ---------------------------------------------------------------- hostile files, one defect class each
def _lin(name, out_f, in_f, *, bits=6, seed=0):
    codes = np.random.default_rng(seed).integers(1, 1 << (bits - 1), size=out_f * in_f).astype(np.int64)
    return packfile.LayerCodes(name, "linear", (out_f, in_f), codes, bits, True, np.full(1, 0.01, np.float32),
                               np.zeros(1, np.float32))


def _graph(*, domain="", external=False, function=False, extra_input=False):
    """Flatten -> MatMul(w) -> Add(b): the weight and bias come from the file's records."""
    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["logits"], domain=domain)]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 2, 2])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [1]))
    inits = []
    if external:
        t = numpy_helper.from_array(np.zeros(3, np.float32), "c")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value="/etc/passwd")
        inits.append(t)
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
                          inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(g, opset_imports=opsets)
    if function:
        model.functions.append(helper.make_function("evil", "f", ["x"], ["y"],
                                                    [helper.make_node("Identity", ["x"], ["y"])],
                                                    [helper.make_opsetid("", 17)]))
    return model.SerializeToString()


def _craft(graph=None, refs=None, layers=None, tensors=None):
    w = _lin("w.weight", 4, 3)
    layers = [w] if layers is None else layers
    tensors = {"b": np.zeros(3, np.float32)} if tensors is None else tensors
    refs = {"w": ["weight", "w.weight"], "b": ["tensor", "b"]} if refs is None else refs
    meta = {"refs": refs, "record": {}, "input": [1, 2, 2], "classes": 3}
    return packfile.write_container(_graph() if graph is None else graph, meta, [(lc, 5) for lc in layers],
                                    tensors)[0]


def test_crafted_file_is_valid_and_runs():
    data = _craft(refs={"w": ["weight", "w.weight"], "b": ["tensor", "b"]}, layers=[_lin("w.weight", 4, 3)])
    out = unpack_model(data)(torch.rand(2, 1, 2, 2))
    assert out.shape == (2, 3)


HOSTILE = {
    "custom operator domain": (dict(graph=_graph(domain="com.evil")), "domain"),
    "external tensor data": (dict(graph=_graph(external=True)), "external"),
    "local function": (dict(graph=_graph(function=True)), "domain|local functions"),
    "two graph inputs": (dict(graph=_graph(extra_input=True)), "2 inputs"),
    "graph not protobuf": (dict(graph=b"\xff" * 64), "not a valid ONNX protobuf|holds no graph"),
    "empty graph": (dict(graph=b""), "holds no graph|not a valid"),
    "reference to a missing weight": (dict(refs={"w": ["weight", "nope"], "b": ["tensor", "b"]}), "does not hold"),
    "reference to a missing tensor": (dict(refs={"w": ["weight", "w.weight"], "b": ["tensor", "x"]}),
                                      "does not hold"),
    "unknown reference kind": (dict(refs={"w": ["pickle", "w.weight"], "b": ["tensor", "b"]}), "malformed"),
    "reference not a pair": (dict(refs={"w": "w.weight", "b": ["tensor", "b"]}), "malformed"),
    "int8 codes of a wide weight": (dict(refs={"w": ["codes", "w.weight"], "b": ["tensor", "b"]},
                                         layers=[_lin("w.weight", 4, 3, bits=12)]), "wants int8 codes"),
    "weight shape the graph does not take": (dict(refs={"w": ["weight", "w.weight"], "b": ["tensor", "b"]},
                                                  layers=[_lin("w.weight", 5, 3)]), "ONNX Runtime|not valid"),
    "duplicate record names": (dict(layers=[_lin("w.weight", 4, 3), _lin("w.weight", 4, 3)]), "more than once"),
    "NaN tensor": (dict(tensors={"b": np.full(3, np.nan, np.float32)}), "NaN"),
    "unreferenced graph input": (dict(refs={"b": ["tensor", "b"]}), "not valid ONNX"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_reader_rejects_hostile_files(case):
    kwargs, pattern = HOSTILE[case]
    with pytest.raises(PackFormatError, match=pattern):
        unpack_model(_craft(**kwargs))(torch.rand(2, 1, 2, 2))


def test_reader_rejects_mangled_weight_records(monkeypatch):
    monkeypatch.setattr(packfile, "_check_writable", lambda lc: None)  # write what the writer would refuse

    def body_with(lc):
        return _craft(layers=[lc], refs={"b": ["tensor", "b"], "w": ["weight", lc.name]})

    w = _lin("w.weight", 4, 3)
    w.scale = np.zeros(1, np.float32)
    with pytest.raises(PackFormatError, match="non-positive weight scale"):
        read_packed(body_with(w))
    w = _lin("w.weight", 4, 3)
    w.scale = np.array([np.nan], np.float32)
    with pytest.raises(PackFormatError, match="non-finite scale"):
        read_packed(body_with(w))
    w = _lin("w.weight", 4, 3)
    w.shape = (0xFFFFFFFF, 0xFFFFFFFF)
    with pytest.raises(PackFormatError, match="out of bounds"):
        read_packed(body_with(w))


def test_writer_refuses_what_the_reader_would_reject():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(StageError, match="non-finite"):
        pack_model(model, torch.rand(2, 1, 2, 2))
    binary = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    quantize_model(binary, FixedPointSpec(bits=1, scheme="binary", per_channel=True))
    with pytest.raises(StageError, match="2-16-bit"):
        pack_model(binary, torch.rand(2, 1, 2, 2))


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
    data, acct = pack_model(model, torch.rand(2, 1, 20, 40))
    bits = acct["layers"]["1.weight"]
    if enc == packfile.ENC_BITMASK:
        assert bits["indices"] >= 800 * 500 and bits.get("pointers", 0) == 0
    else:
        assert bits["pointers"] > 0
    layers = {lc.name: lc for lc in read_packed(data).layers}
    np.testing.assert_array_equal(layers["1.weight"].codes, weight_codes(model, "1").codes.numpy().ravel())
    x = torch.rand(3, 1, 20, 40)
    torch.testing.assert_close(unpack_model(data, nn.Sequential(nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                                                                nn.Linear(500, 10)))(x), model(x))


def test_zero_points_are_stored_only_when_non_zero():
    torch.manual_seed(0)
    sizes = {}
    for symmetric in (True, False):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        quantize_model(model, FixedPointSpec(bits=6, signed=symmetric, symmetric=symmetric, per_channel=True))
        data, acct = pack_model(model, torch.rand(2, 1, 8, 8))
        restored = unpack_model(data, nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
        for idx in ("1", "3"):
            want = weight_codes(model, idx)
            got = weight_codes(restored, idx)
            assert torch.equal(got.codes, want.codes)
        x = torch.rand(5, 1, 8, 8)
        torch.testing.assert_close(restored(x), model(x))
        assert bool((weight_codes(model, "1").zero_point != 0).any()) is not symmetric
        sizes[symmetric] = acct["layers"]["1.weight"]["header"] + acct["layers"]["3.weight"]["header"]
    # per-channel zero points: one float32 per output channel of each layer (32 + 10)
    assert sizes[False] - sizes[True] == 32 * (32 + 10)


def test_graph_is_parsed_as_data_not_code():
    """The graph bytes go through onnx.load_from_string and the checker only; a valid ModelProto with a custom
    op is refused before ONNX Runtime could look for a kernel library."""
    g = onnx.load_from_string(_graph(domain="ai.onnx.contrib"))
    assert g.graph.node[-1].domain == "ai.onnx.contrib"
    with pytest.raises(PackFormatError, match="domain"):
        read_packed(_craft(graph=g.SerializeToString()))

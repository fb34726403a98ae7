import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from crosslayer.encode import PackFormatError, pack_model, read_packed, unpack_model, write_packed
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

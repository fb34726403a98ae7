import json

import numpy as np
import onnxruntime as ort
import pytest
from torch import nn
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.encode.onnx_export import onnx_model
from crosslayer.errors import StageError
from crosslayer.flow import load_flow_config, run_flow
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.train import predict

runner = CliRunner()


def test_onnx_float_and_int8_match_pytorch(lenet5_trained, mnist_small):
    x = mnist_small.test.images[:500]
    for quantize in (False, True):
        if quantize:
            quantize_model(lenet5_trained, FixedPointSpec(bits=8), FixedPointSpec(bits=8, signed=False,
                                                                                  symmetric=False))
            with calibrating(lenet5_trained):
                predict(lenet5_trained, mnist_small.train.images[:500])
        proto = onnx_model(lenet5_trained)
        ops = {n.op_type for n in proto.graph.node}
        assert ("QuantizeLinear" in ops) == quantize
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})[0]
        ref = predict(lenet5_trained, x).numpy()
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995
        if not quantize:
            np.testing.assert_allclose(got, ref, atol=1e-4)


def test_a_graph_torch_onnx_cannot_export_is_named():
    class Pool(nn.Module):
        def forward(self, x):
            return nn.functional.adaptive_avg_pool2d(x, 3).flatten(1)  # 28 -> 3: not a factor, not exportable

    with pytest.raises(StageError, match="torch.onnx cannot export Sequential: .*adaptive_avg_pool2d"):
        onnx_model(nn.Sequential(Pool(), nn.Linear(9, 2)))


def test_flow_encode_export_and_cli(tmp_path, data_dir):
    cfg = tmp_path / "f.toml"
    cfg.write_text('[flow]\nmodel = "lenet300"\ntrain_limit = 1500\ntest_limit = 500\n'
                   'stages = ["baseline", "encode", "export"]\n[baseline]\nepochs = 1\noptimizer = "adam"\n'
                   'lr = 0.002\nweight_decay = 0.0\n[export]\nrepeats = 1\n')
    out = tmp_path / "run"
    run_flow(load_flow_config(cfg), out)
    metrics = json.loads((out / "metrics.json").read_text())
    enc = metrics["encode"]
    assert enc["packed_bytes"] == enc["accounted_bytes"]
    assert enc["roundtrip_accuracy_delta"] == 0
    assert metrics["export"]["current_onnx_top1_agreement"] >= 0.995
    xlm = tmp_path / "m.xlm"
    res = runner.invoke(app, ["pack", str(out), "-o", str(xlm), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["bytes"] == xlm.stat().st_size
    res = runner.invoke(app, ["unpack", str(xlm), "--eval", "mnist", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["test_accuracy"] > 0.5  # 1 epoch on 1,500 images: a sanity bound
    bad = tmp_path / "bad.xlm"
    bad.write_bytes(xlm.read_bytes()[:100])
    res = runner.invoke(app, ["unpack", str(bad)])
    assert res.exit_code == 2 and "checksum" in res.output
    res = runner.invoke(app, ["export", str(out), "-o", str(tmp_path / "m.onnx"), "--json"])
    assert res.exit_code == 0 and (tmp_path / "m.onnx").stat().st_size > 1000

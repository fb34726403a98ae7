"""The encoding verbs: pack / unpack / export_onnx on LeNet-5 and on user-style models (residual adds, depthwise
convs, squeeze-and-excitation, attention, concatenation, functional ops in forward), float and int8; a clear
error for a graph torch.onnx cannot export."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from crosslayer import (
    EncodeConfig,
    ExportConfig,
    MagnitudePruneConfig,
    QuantizeConfig,
    export_onnx,
    pack,
    quantize,
    sparsify,
    unpack,
)
from crosslayer.cli.main import app
from crosslayer.data import DataSplits, ImageDataset
from crosslayer.encode import PackFormatError
from crosslayer.errors import ConfigError, DataError, StageError
from crosslayer.train import evaluate, predict


class FunctionalNet(nn.Module):
    """A user model with BatchNorm and functional ops in forward (F.relu, F.max_pool2d, x.view(x.size(0), -1))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), kernel_size=2, stride=2)
        return self.fc(x.view(x.size(0), -1))


def _resized(ds: ImageDataset, size: int) -> ImageDataset:
    images = F.interpolate(ds.images, size=(size, size), mode="bilinear", align_corners=False)
    return ImageDataset(ds.name, ds.split, images, ds.labels, ds.classes, ds.source)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def tiny(mnist_small: DataSplits) -> DataSplits:
    return DataSplits(mnist_small.train.subset(600), mnist_small.val.subset(200), mnist_small.test.subset(400))


def test_pack_unpack_pruned_quantized_lenet5(lenet5_trained: nn.Module, tiny: DataSplits, tmp_path: Path) -> None:
    pruned = sparsify(lenet5_trained, MagnitudePruneConfig(sparsity=0.9)).model
    q = quantize(pruned, QuantizeConfig(weight_bits=5, act_bits=8, calib_batches=2), tiny).model
    before = _state(q)
    res = pack(q, EncodeConfig(), tmp_path / "m.xlm", tiny.test.images[:2])
    assert res.path.stat().st_size == res.file_bytes == sum(res.bits_by_part.values()) // 8
    assert sum(sum(v.values()) for v in res.layer_bits.values()) < 8 * res.file_bytes  # + graph, tensors and crc
    assert set(res.layer_formats) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}
    assert set(res.layer_formats.values()) <= {"dense", "csr", "csc", "bitmask"}
    assert res.layer_formats["fc1.weight"] != "dense"  # 90 % zeros: a sparse format wins
    assert res.graph_kind == "int8 QDQ"
    # 5-bit codes of 10 % of the weights: well over 10x smaller than dense fp32 weights
    assert res.compression_ratio > 10 and res.file_compression_ratio > 5
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items()), "pack must not modify the model"
    restored = unpack(res.path)
    x = tiny.test.images
    assert torch.equal(predict(restored, x).argmax(1), predict(q, x).argmax(1))
    assert torch.equal(predict(unpack(res.path.read_bytes()), x[:50]), predict(restored, x[:50]))
    from crosslayer.models import LeNet5

    module = unpack(res.path, model=LeNet5())
    assert torch.equal(predict(module, x).argmax(1), predict(q, x).argmax(1))


def test_export_onnx_float_and_int8_agree_with_pytorch(lenet5_trained: nn.Module, tiny: DataSplits,
                                                       tmp_path: Path) -> None:
    before = _state(lenet5_trained)
    f = export_onnx(lenet5_trained, ExportConfig(speed=False), tmp_path / "f.onnx", tiny.test.images[:4],
                    data=tiny.test)
    assert not f.int8 and f.max_abs_diff < 1e-4 and f.agreement == 1.0 and f.images == len(tiny.test)
    assert f.accuracy == pytest.approx(evaluate(lenet5_trained, tiny.test).accuracy)
    assert f.path.stat().st_size == f.file_bytes and f.timing == {}
    assert all(torch.equal(before[k], v) for k, v in lenet5_trained.state_dict().items())
    q = quantize(lenet5_trained, QuantizeConfig(weight_bits=8, act_bits=8, calib_batches=2), tiny).model
    i8 = export_onnx(q, ExportConfig(speed=True, repeats=1), tmp_path / "q.onnx", tiny.test.images[0], data=tiny.test)
    assert i8.int8 and i8.agreement is not None and i8.agreement >= 0.99
    assert set(i8.timing) == {"PyTorch", "ONNX Runtime"}
    assert all(t["latency_ms_b1"] > 0 and t["throughput_b256"] > 0 for t in i8.timing.values())
    without = export_onnx(q, ExportConfig(), tmp_path / "q2.onnx", tiny.test.images[:2])
    # ONNX Runtime runs integer kernels (its own requantization rounding): logits differ by a few LSBs, not 0
    assert without.agreement is None and without.images == 0 and 0 < without.max_abs_diff < 10


def test_functional_user_model_packs_and_exports(tiny: DataSplits, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = FunctionalNet().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 2.0)
    res = pack(net, EncodeConfig(), tmp_path / "f.xlm", tiny.test.images[:2])
    restored = unpack(res.path)
    x = tiny.test.images[:32]
    torch.testing.assert_close(restored(x), net(x), rtol=1e-4, atol=1e-5)
    ex = export_onnx(net, ExportConfig(speed=False), tmp_path / "f.onnx", x, data=tiny.test)
    assert ex.max_abs_diff < 1e-4 and ex.agreement == 1.0
    small = sparsify(net, MagnitudePruneConfig(sparsity=0.8)).model
    q = quantize(small, QuantizeConfig(weight_bits=4, act_bits=8, calib_batches=1), tiny).model
    packed = pack(q, EncodeConfig(), tmp_path / "s.xlm", x[:2])
    assert packed.layer_formats["fc.weight"] != "dense"
    assert packed.file_bytes < res.file_bytes / 3
    assert torch.equal(predict(unpack(packed.path), x).argmax(1), predict(q, x).argmax(1))


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny", "attention_mlp", "functional_cnn"])
def test_user_models_pack_unpack_and_export(user_model, name: str, tiny: DataSplits, tmp_path: Path) -> None:
    """Every user-style graph packs and exports, float and int8 (pruned, quantized); the unpacked file (ONNX
    Runtime, and the user's own module rebuilt from its factory) gives the same top-1 as before packing."""
    size = 32 if name == "functional_cnn" else 28  # its adaptive pooling to 2x2 needs a side divisible by 8
    data = tiny if size == 28 else DataSplits(*(_resized(s, size) for s in (tiny.train, tiny.val, tiny.test)))
    net = user_model(name, image_size=size)
    x = data.test.images[:200]
    pruned = sparsify(net, MagnitudePruneConfig(sparsity=0.7)).model
    q = quantize(pruned, QuantizeConfig(weight_bits=6, act_bits=8, calib_batches=1, calib_batch_size=64), data).model
    for model in (pruned, q):
        res = pack(model, EncodeConfig(), tmp_path / "m.xlm", x[:2])
        ref = predict(model, x).argmax(1)
        assert torch.equal(predict(unpack(res.path), x).argmax(1), ref)
        assert torch.equal(predict(unpack(res.path, model=user_model(name, image_size=size, seed=7)), x).argmax(1), ref)
        ex = export_onnx(model, ExportConfig(speed=False), tmp_path / "m.onnx", x[:2], data=data.test)
        assert ex.int8 == (model is q) and ex.agreement is not None and ex.max_abs_diff >= 0
        assert (ex.exact_agreement if ex.int8 else ex.agreement) == 1.0
    assert res.graph_kind == "int8 QDQ"


def test_graph_torch_onnx_cannot_export_is_refused_clearly(user_model, tmp_path: Path) -> None:
    """functional_cnn on 28x28 images pools 7x7 maps adaptively to 2x2, which torch.onnx does not export."""
    net = user_model("functional_cnn")
    for call in (lambda: pack(net, EncodeConfig(), tmp_path / "m.xlm", torch.rand(2, 1, 28, 28)),
                 lambda: export_onnx(net, ExportConfig(), tmp_path / "m.onnx", torch.rand(1, 1, 28, 28))):
        with pytest.raises(StageError, match="torch.onnx cannot export FunctionalCNN"):
            call()
    assert not (tmp_path / "m.xlm").exists() and not (tmp_path / "m.onnx").exists()


def test_unpack_and_config_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        unpack(tmp_path / "missing.xlm")
    (tmp_path / "junk.xlm").write_bytes(b"XLM\x00" + b"\x00" * 40)
    with pytest.raises(PackFormatError):
        unpack(tmp_path / "junk.xlm")
    with pytest.raises(ConfigError, match="conv_index_bits"):
        EncodeConfig(conv_index_bits=0)
    with pytest.raises(ConfigError, match="repeats"):
        ExportConfig(repeats=0)
    with pytest.raises(DataError, match="example_input"):
        export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), ExportConfig(), tmp_path / "x.onnx", torch.rand(4))


def test_cli_pack_and_export_take_model_and_weights(lenet5_trained: nn.Module, tmp_path: Path, data_dir: Path) -> None:
    w = tmp_path / "w.pt"
    torch.save(copy.deepcopy(lenet5_trained).state_dict(), w)
    runner = CliRunner()
    r = runner.invoke(app, ["pack", "--model", "lenet5", "--weights", str(w), "-o", str(tmp_path / "m.xlm"), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["bytes"] == (tmp_path / "m.xlm").stat().st_size and m["layer_formats"]["fc1.weight"] == "dense"
    r = runner.invoke(app, ["export", "--model", "lenet5", "--weights", str(w), "-o", str(tmp_path / "m.onnx"),
                            "--check-images", "200", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["images"] == 200 and m["top1_agreement"] == 1.0 and not m["int8"]
    r = runner.invoke(app, ["unpack", str(tmp_path / "m.xlm"), "--model", "lenet5", "--out", str(tmp_path / "sd.pt"),
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runtime"] == "PyTorch"
    state = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert torch.equal(state["fc2.weight"], lenet5_trained.state_dict()["fc2.weight"])
    r = runner.invoke(app, ["unpack", str(tmp_path / "m.xlm"), "--out", str(tmp_path / "m2.onnx"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["runtime"] == "ONNX Runtime"
    assert (tmp_path / "m2.onnx").read_bytes()[:2] != b"XL"
    r = runner.invoke(app, ["pack", "-o", str(tmp_path / "n.xlm")])
    assert r.exit_code == 2 and "RUN_DIR" in r.output

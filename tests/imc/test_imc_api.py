"""The imc verbs: imc_simulate (chips are seeds; an ideal crossbar gives the digital model's predictions back) and
imc_train (a fine-tuned copy), on LeNet-5 and on user-style models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer import AwareTrainConfig, CrossbarSpec, ImcTrainConfig, SimulateConfig, imc_simulate, imc_train
from crosslayer.config import from_mapping
from crosslayer.data import DataSplits, ImageDataset
from crosslayer.errors import ConfigError

IDEAL = CrossbarSpec(levels=4096, dac_bits=0, adc_bits=0)


@pytest.fixture
def small(mnist_small: DataSplits) -> DataSplits:
    return DataSplits(mnist_small.train.subset(256), mnist_small.val.subset(100), mnist_small.test.subset(200))


def test_simulate_lenet5_ideal_noisy_and_sweeps(lenet5_trained: nn.Module, small: DataSplits) -> None:
    state = {k: v.clone() for k, v in lenet5_trained.state_dict().items()}
    ideal = imc_simulate(lenet5_trained, SimulateConfig(crossbar=IDEAL, calibration_images=0), small, seeds=[0])
    assert ideal.images == 200 and ideal.accuracy == pytest.approx(ideal.digital_accuracy, abs=0.01)
    cfg = SimulateConfig(crossbar=CrossbarSpec(d2d_sigma=0.8), sigmas=(0.0, 0.8), adc_bits_sweep=(3, 8),
                         eval_limit=150, calibration_images=64)
    noisy = imc_simulate(lenet5_trained, cfg, small, seeds=[0, 1])
    assert len(noisy.point.accuracies) == 2 and noisy.images == 150
    assert noisy.accuracy < noisy.digital_accuracy  # strong device variation costs accuracy
    assert [p.value for p in noisy.sweeps["d2d_sigma"]] == [0.0, 0.8]
    assert noisy.sweeps["d2d_sigma"][1].accuracies == noisy.point.accuracies  # the operating point, again
    assert [p.value for p in noisy.sweeps["adc_bits"]] == [3.0, 8.0]
    assert imc_simulate(lenet5_trained, cfg, small, seeds=[0, 1]).point == noisy.point, "chips are seeds"
    assert all(torch.equal(state[k], v) for k, v in lenet5_trained.state_dict().items())


@pytest.mark.parametrize("name", ["resnet_tiny", "functional_cnn", "attention_mlp"])
def test_simulate_user_models_on_an_ideal_crossbar(user_model, name: str) -> None:
    """BatchNorm + residual adds, functional ops, attention: an ideal crossbar keeps the model's predictions."""
    net = user_model(name).eval()
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = net(images).argmax(1)
    ds = ImageDataset("toy", "test", images, labels, tuple(str(i) for i in range(10)), "random")
    res = imc_simulate(net, SimulateConfig(crossbar=IDEAL, calibration_images=0), DataSplits(ds, ds, ds), seeds=[3])
    assert res.digital_accuracy == 1.0 and res.accuracy >= 0.95


def test_imc_train_returns_a_trained_copy(user_model, small: DataSplits) -> None:
    net = user_model("resnet_tiny")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = ImcTrainConfig(crossbar=CrossbarSpec(d2d_sigma=0.3), training=AwareTrainConfig(epochs=1, batch_size=64))
    out = imc_train(net, cfg, small, seed=0)
    assert out.model is not net and len(out.training.history) == 1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not torch.equal(out.model.fc.weight, net.fc.weight)
    again = imc_train(net, cfg, small, seed=0)
    assert torch.equal(again.model.fc.weight, out.model.fc.weight), "same seed, same fine-tuning"


def test_configs_validate_and_nest() -> None:
    cfg = from_mapping(ImcTrainConfig, {"crossbar": {"d2d_sigma": 0.2}, "training": {"epochs": 3}}, section="imc_train")
    # a table given replaces the default crossbar: its missing keys take CrossbarSpec's own defaults
    assert cfg.crossbar.d2d_sigma == 0.2 and cfg.crossbar.c2c_sigma == 0.0 and cfg.training.epochs == 3
    assert ImcTrainConfig().crossbar.c2c_sigma == 0.2 and ImcTrainConfig().training == AwareTrainConfig()
    with pytest.raises(ConfigError, match=r"\[imc_train\] crossbar\.g_min"):
        from_mapping(ImcTrainConfig, {"crossbar": {"g_min": 30.0}}, section="imc_train")
    with pytest.raises(ConfigError, match="adc_bits_sweep"):
        SimulateConfig(adc_bits_sweep=(1,))
    with pytest.raises(ConfigError, match="seed"):
        imc_simulate(nn.Linear(2, 2), SimulateConfig(), None, seeds=[])  # type: ignore[arg-type]

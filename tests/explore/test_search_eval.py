"""Building and measuring one design with the library's public steps, on LeNet-5 and on user-style models."""

from __future__ import annotations

import pytest
import torch

from crosslayer.approx import ApproxLayer
from crosslayer.data import DataSplits
from crosslayer.explore.search_eval import FineTune, HardwareTarget, build_design, evaluate_design, measure
from crosslayer.explore.search_space import Design, LayerChoice, search_layers
from crosslayer.hw import load_accelerator
from crosslayer.imc import CrossbarSpec
from crosslayer.imc.cost import layer_shapes, network_cost
from crosslayer.quant import QuantLayer


@pytest.fixture(scope="module")
def small(mnist_small: DataSplits) -> DataSplits:
    return DataSplits(mnist_small.train.subset(600), mnist_small.val.subset(200), mnist_small.val.subset(200))


@pytest.fixture(scope="module")
def hw(mnist_small: DataSplits) -> HardwareTarget:
    return HardwareTarget(load_accelerator("eyeriss"), mnist_small.val.images[:16])


def _uniform(model: torch.nn.Module, sparsity: float, wb: int, ab: int, mult: str = "exact") -> Design:
    return Design({n: LayerChoice(sparsity, wb, ab, mult) for n in search_layers(model)})


def test_lenet_design_is_built_as_it_says_and_costs_less(lenet5_trained, small, hw) -> None:
    design = Design({"conv1": LayerChoice(0.0, 8, 8), "conv2": LayerChoice(0.5, 8, 8, "drum5"),
                     "fc1": LayerChoice(0.9, 4, 6, "trunc6"), "fc2": LayerChoice(0.2, 8, 8, "trunc4")})
    built, m = evaluate_design(lenet5_trained, design, small, FineTune(epochs=1), hw, seed=0)
    fc1 = built.quantized.get_submodule("fc1")
    assert isinstance(fc1, QuantLayer) and fc1.weight_spec.bits == 4 and fc1.act_spec.bits == 6
    assert float((fc1.weight == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)  # masks kept through fine-tuning
    assert isinstance(built.model.get_submodule("conv2"), ApproxLayer)
    assert built.model.get_submodule("conv2").multiplier_name == "drum5"
    assert not isinstance(built.model.get_submodule("conv1"), ApproxLayer)
    assert built.assignment == {"conv2": "drum5", "fc2": "trunc4"}
    assert "4-bit weights" in built.exact_kept["fc1"]  # an 8x8 multiplier is not put on narrower operands
    assert m.accuracy > 0.9 and m.images == 200
    _, dense = evaluate_design(lenet5_trained, _uniform(lenet5_trained, 0.0, 8, 8), small, FineTune(epochs=0), hw)
    assert m.energy < dense.energy and m.size_bytes < dense.size_bytes
    again = measure(build_design(lenet5_trained, design, small, FineTune(epochs=1), seed=0), small.val, hw)
    assert again == m  # same design, same seed: same figures


def test_fixed_dataflow_and_latency_choice(lenet5_trained, small, hw) -> None:
    base = _uniform(lenet5_trained, 0.5, 8, 8)
    figures = {df: evaluate_design(lenet5_trained, Design(base.layers, dataflow=df), small, FineTune(epochs=0), hw)[1]
               for df in ("min-energy", "min-latency", "WS", "RS")}
    assert figures["min-energy"].energy <= min(f.energy for f in figures.values()) + 1e-6
    assert figures["min-latency"].latency_ms <= min(f.latency_ms for f in figures.values()) + 1e-12
    assert len({round(f.energy) for f in figures.values()}) > 1


def test_imc_execution_costs_the_crossbars(lenet5_trained, small, hw) -> None:
    design = Design(_uniform(lenet5_trained, 0.3, 8, 8, "drum5").layers, execution="imc")
    built, m = evaluate_design(lenet5_trained, design, small, FineTune(epochs=0), hw)
    assert built.assignment == {}  # no digital multipliers on crossbars
    _, totals = network_cost(layer_shapes(built.quantized, (1, 28, 28)), CrossbarSpec())
    assert m.energy == pytest.approx(totals["energy_mac_units"]) and 0.5 < m.accuracy <= 1.0


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny"])
def test_user_models_take_the_design(name: str, user_model, small, hw) -> None:
    model = user_model(name).eval()
    design = _uniform(model, 0.5, 8, 8, "drum5")
    built, m = evaluate_design(model, design, small, FineTune(epochs=1), hw, seed=0)
    approx = {n for n, mod in built.model.named_modules() if isinstance(mod, ApproxLayer)}
    assert approx == set(built.assignment) and approx
    assert set(built.assignment) | set(built.exact_kept) == set(search_layers(model))
    if name == "mobilenet_tiny":
        assert set(built.exact_kept) == {"separable.0", "block1.depthwise.0", "block2.depthwise.0"}
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in built.model.modules())
    assert 0.0 <= m.accuracy <= 1.0 and m.energy > 0 and m.latency_ms > 0 and m.size_bytes > 0
    assert m.sparsity == pytest.approx(0.5, abs=0.02)


def test_channel_cut_removes_channels_before_the_weights_are_pruned(lenet5_trained, small, hw) -> None:
    layers = _uniform(lenet5_trained, 0.5, 6, 6).layers
    cut = Design(layers, channels={"conv1": 0.5, "conv2": 0.5, "fc1": 0.6})
    built, m = evaluate_design(lenet5_trained, cut, small, FineTune(epochs=1), hw, seed=0)
    q = built.quantized
    shapes = {n: tuple(q.get_submodule(n).weight.shape) for n in ("conv1", "conv2", "fc1", "fc2")}
    assert shapes == {"conv1": (10, 1, 5, 5), "conv2": (25, 10, 5, 5), "fc1": (300, 25 * 16), "fc2": (10, 300)}
    fc1 = q.get_submodule("fc1")
    assert float((fc1.weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)  # then pruned by magnitude
    assert tuple(lenet5_trained.conv1.weight.shape) == (20, 1, 5, 5)  # the caller's model is untouched
    _, whole = evaluate_design(lenet5_trained, Design(layers), small, FineTune(epochs=1), hw, seed=0)
    assert m.energy < 0.75 * whole.energy and m.size_bytes < whole.size_bytes
    assert m.accuracy > 0.8


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny"])
def test_user_models_take_a_channel_cut(name: str, user_model, small, hw) -> None:
    from crosslayer.explore.search import SearchConfig, build_space

    model = user_model(name).eval()
    space = build_space(model, SearchConfig(max_channel_cut=0.5), (), example_input=small.train.images[:1])
    design = space.decode(space.uniform_params(0.3, 8, 8, 0.5))
    built, m = evaluate_design(model, design, small, FineTune(epochs=1), hw, seed=0)
    stem = built.quantized.get_submodule("stem.0")
    assert stem.weight.shape[0] == model.get_submodule("stem.0").weight.shape[0] // 2
    assert built.model(small.val.images[:4]).shape == (4, 10)
    _, whole = evaluate_design(model, Design(design.layers), small, FineTune(epochs=1), hw, seed=0)
    assert m.energy < whole.energy and 0.0 <= m.accuracy <= 1.0

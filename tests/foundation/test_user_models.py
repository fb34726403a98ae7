"""The user-style models of tests/user_models.py: each builds, runs forward, trains a step, is seeded, and
loads as a user factory that receives the dataset's sizes."""

import pytest
import torch
from torch import nn

from crosslayer.models import build_model
from user_models import USER_MODEL_NAMES, USER_MODELS_FILE


@pytest.mark.parametrize("name", USER_MODEL_NAMES)
@pytest.mark.parametrize("sizes", [(10, 1, 28), (5, 3, 32)])
def test_user_model_forward_and_one_training_step(user_model, name, sizes):
    num_classes, in_channels, image_size = sizes
    model = user_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, in_channels, image_size, image_size, generator=g)
    y = torch.randint(0, num_classes, (8,), generator=g)
    out = model(x)
    assert out.shape == (8, num_classes)
    assert torch.isfinite(out).all()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "every parameter takes part in the loss"
    opt.step()
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) >= len(list(model.parameters()))


@pytest.mark.parametrize("name", USER_MODEL_NAMES)
def test_user_models_are_seeded(user_model, name):
    torch.manual_seed(123)
    a = user_model(name, seed=0)
    torch.manual_seed(456)
    b = user_model(name, seed=0)
    c = user_model(name, seed=1)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values(),
                                                         strict=True))


def test_user_models_hold_the_layer_kinds_they_promise(user_model):
    kinds = {name: {type(m).__name__ for m in user_model(name).modules()} for name in USER_MODEL_NAMES}
    assert {"BatchNorm2d", "Conv2d"} <= kinds["resnet_tiny"]
    assert {"ReLU6", "Hardswish", "BatchNorm2d"} <= kinds["mobilenet_tiny"]
    assert any(m.groups == m.in_channels > 1 for m in user_model("mobilenet_tiny").modules()
               if isinstance(m, nn.Conv2d))
    assert {"GELU", "LayerNorm", "MultiheadAttention"} <= kinds["attention_mlp"]
    assert any(isinstance(m, nn.Linear) and m.bias is None for m in user_model("attention_mlp").modules())
    assert "MaxPool2d" not in kinds["functional_cnn"] and "ReLU" not in kinds["functional_cnn"]


@pytest.mark.parametrize("name", USER_MODEL_NAMES)
def test_user_models_load_as_factories_with_the_data_sizes(name):
    model = build_model(f"{USER_MODELS_FILE}:{name}", num_classes=7, in_channels=3, image_size=32)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_zero_argument_and_kwargs_factories_still_work(tmp_path):
    f = tmp_path / "facts.py"
    f.write_text("import torch.nn as nn\n"
                 "def bare():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
                 "def some(num_classes=10):\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n"
                 "def anything(**kw):\n"
                 "    return nn.Sequential(nn.Flatten(), nn.Linear(kw['in_channels'] * kw['image_size'] ** 2,"
                 " kw['num_classes']))\n")
    assert build_model(f"{f}:bare", num_classes=3)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert build_model(f"{f}:some", num_classes=3, in_channels=2)(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert build_model(f"{f}:anything", num_classes=4, in_channels=2, image_size=8)(
        torch.zeros(2, 2, 8, 8)).shape == (2, 4)

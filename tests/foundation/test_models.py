import pytest
import torch

from crosslayer.errors import ModelError
from crosslayer.models import build_model, count_params, load_weights


def test_caffe_lenet5_and_lenet300_sizes():
    # Han et al. 2015: LeNet-5 about 431k weights, LeNet-300-100 about 267k.
    assert count_params(build_model("lenet5")) == 431_080
    assert count_params(build_model("lenet300")) == 266_610


@pytest.mark.parametrize("name", ["lenet5", "lenet300", "vgg-small"])
def test_models_output_logits(name):
    out = build_model(name)(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)


def test_unknown_model_names_choices():
    with pytest.raises(ModelError, match="choose one of lenet5"):
        build_model("resnet999")


def test_user_model_from_file(tmp_path):
    f = tmp_path / "my_net.py"
    f.write_text("import torch.nn as nn\n"
                 "def make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
                 "def not_a_model():\n    return 3\n")
    assert build_model(f"{f}:make")(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ModelError, match="no callable factory 'nope'"):
        build_model(f"{f}:nope")
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        build_model(f"{f}:not_a_model")
    with pytest.raises(ModelError, match="does not exist"):
        build_model(f"{tmp_path / 'missing.py'}:make")


def test_user_model_from_module():
    m = build_model("crosslayer.models.lenet:LeNet5")
    assert count_params(m) == 431_080


def test_weights_loaded_safely_and_mismatch_names_layer(tmp_path):
    src = build_model("lenet5")
    p = tmp_path / "w.pt"
    torch.save(src.state_dict(), p)
    dst = load_weights(build_model("lenet5"), p)
    assert torch.equal(dst.fc2.weight, src.fc2.weight)
    bad = src.state_dict()
    bad["fc1.weight"] = torch.zeros(3, 3)
    torch.save(bad, p)
    with pytest.raises(ModelError, match="'fc1.weight'"):
        load_weights(build_model("lenet5"), p)
    torch.save({"x": 1}, p)
    with pytest.raises(ModelError, match="state dict of tensors"):
        load_weights(build_model("lenet5"), p)
    torch.save({"x": torch.zeros(1)}, p)
    with pytest.raises(ModelError, match="layer 'x'"):
        load_weights(build_model("lenet5"), p)


def test_unsafe_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save(build_model("lenet5"), p)  # a pickled module, not a state dict: weights_only refuses it
    with pytest.raises(ModelError, match="safely"):
        load_weights(build_model("lenet5"), p)

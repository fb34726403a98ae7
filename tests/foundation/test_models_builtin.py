"""ResNet-20 and MobileNetV2: sizes from the papers, shapes for any data, input normalisation in the state dict."""

import pytest
import torch
from torch import nn

from crosslayer.data import ImageDataset
from crosslayer.errors import ModelError
from crosslayer.models import MobileNetV2, Normalize, ResNet20, build_model, count_params, normalize_inputs
from crosslayer.models.mobilenet import make_divisible, stride_plan


def test_resnet20_size_and_structure():
    # He et al. 2016, table 6: ResNet-20 has 0.27 M parameters (option A); option B adds two 1x1 projections.
    a, b = ResNet20(shortcut="A"), ResNet20()
    assert count_params(a) == 269_434 and count_params(b) == 272_186
    convs = [m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19  # 6n + 1 weighted 3x3 convs, + the fc = 20 layers
    assert count_params(ResNet20(depth=56)) > 3 * count_params(b)
    with pytest.raises(ModelError, match="6n . 2"):
        ResNet20(depth=21)


def test_mobilenetv2_imagenet_size_and_small_image_strides():
    # Sandler et al. 2018, table 4: 3.4 M parameters at width 1.0 on 224x224 ImageNet (3,504,872 exactly).
    assert count_params(MobileNetV2(num_classes=1000, in_channels=3, image_size=224)) == 3_504_872
    assert stride_plan(224) == (2, 2, 2, 2, 2) and stride_plan(32) == (2, 2, 2, 1, 1)
    assert stride_plan(28) == (2, 2, 2, 1, 1) and stride_plan(64) == (2, 2, 2, 2, 1)
    assert stride_plan(28, downsample=1) == (2, 1, 1, 1, 1)
    feats = MobileNetV2().features(torch.zeros(1, 1, 28, 28))
    assert feats.shape == (1, 1280, 4, 4)
    half = MobileNetV2(width=0.5)
    assert half.features[0][0].out_channels == 16 and half.features[-1][0].out_channels == 1280
    assert make_divisible(0.35 * 16) == 8 and make_divisible(0.75 * 24) == 24
    depthwise = [m for m in half.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 17
    with pytest.raises(ModelError, match="width multiplier"):
        MobileNetV2(width=0.0)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "mobilenetv2-0.5", "ResNet-20", "mobilenet_v2"])
@pytest.mark.parametrize("sizes", [(10, 1, 28), (100, 3, 32), (7, 4, 20)])
def test_built_in_models_fit_any_data(name, sizes):
    num_classes, c, s = sizes
    model = build_model(name, num_classes=num_classes, in_channels=c, image_size=s)
    model.eval()
    assert model(torch.rand(2, c, s, s)).shape == (2, num_classes)
    assert model(torch.rand(1, c, s, s + 6)).shape == (1, num_classes)  # non-square images too


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2-0.5"])
def test_one_training_step_lowers_the_loss_on_its_batch(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, in_channels=3, image_size=16)
    x, y = torch.rand(16, 3, 16, 16), torch.arange(16) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_normalize_from_training_data_travels_in_the_state_dict():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(50, 3, 8, 8, generator=g) * torch.tensor([0.5, 1.0, 0.2]).view(1, 3, 1, 1)
    train = ImageDataset("t", "train", images, torch.zeros(50, dtype=torch.int64), ("a", "b"), "mem")
    mean, std = train.channel_stats()
    assert mean == pytest.approx(images.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(images.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-5)
    model = build_model("resnet20", num_classes=2, in_channels=3, image_size=8)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(model.normalize(x), x)  # identity until statistics are set
    assert normalize_inputs(model, train)
    z = model.normalize(images)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and (z.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    fresh = build_model("resnet20", num_classes=2, in_channels=3, image_size=8)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.normalize.std, model.normalize.std)
    assert not normalize_inputs(build_model("lenet5"), train)  # LeNet stays exactly as it was
    with pytest.raises(ModelError, match="std > 0"):
        Normalize(3).set([0, 0, 0], [1, 0, 1])
    with pytest.raises(ModelError, match="3 value"):
        build_model("mobilenetv2", in_channels=3, input_stats=([0.5], [0.2]))

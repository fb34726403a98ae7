import math

import pytest
import torch

from crosslayer.errors import ConfigError
from crosslayer.train import TrainConfig, _cache_key, random_affine, random_shift


def _dot_image(row: int, col: int) -> torch.Tensor:
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, row, col] = 1.0
    return x


def test_shift_moves_pixels_by_at_most_max_shift():
    g = torch.Generator().manual_seed(0)
    x = _dot_image(14, 14).repeat(64, 1, 1, 1)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape
    for img in y:
        r, c = divmod(int(img.flatten().argmax()), 28)
        assert abs(r - 14) <= 2 and abs(c - 14) <= 2
        assert float(img.sum()) == 1.0  # an integer shift keeps the pixel whole


def test_affine_is_identity_when_off_and_seeded_when_on():
    x = torch.rand(8, 1, 28, 28)
    assert random_affine(x, 0.0, 0.0, torch.Generator().manual_seed(0)) is x
    a = random_affine(x, 10.0, 0.1, torch.Generator().manual_seed(3))
    b = random_affine(x, 10.0, 0.1, torch.Generator().manual_seed(3))
    c = random_affine(x, 10.0, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_affine_rotation_stays_within_the_angle():
    # A bright point 10 px right of the centre; after a rotation of at most 15 degrees (no scale) its
    # centre of mass stays on the circle of radius 10 and within 15 degrees of where it started.
    x = torch.zeros(32, 1, 28, 28)
    x[:, 0, 13:15, 23:25] = 1.0
    y = random_affine(x, 15.0, 0.0, torch.Generator().manual_seed(0))
    rows = torch.arange(28, dtype=torch.float32)[:, None]
    cols = torch.arange(28, dtype=torch.float32)[None, :]
    angles = []
    for img in y[:, 0]:
        m = img.sum()
        cy, cx = float((img * rows).sum() / m) - 13.5, float((img * cols).sum() / m) - 13.5
        assert math.hypot(cx, cy) == pytest.approx(10.0, abs=0.6)
        angles.append(math.degrees(math.atan2(cy, cx)))
    assert max(abs(a) for a in angles) <= 15.5
    assert max(angles) - min(angles) > 10  # the angles really vary


def test_affine_options_are_validated_and_old_cache_keys_kept(mnist_small):
    with pytest.raises(ConfigError, match="augment_rotate"):
        TrainConfig(augment_rotate=-1.0)
    with pytest.raises(ConfigError, match="augment_scale"):
        TrainConfig(augment_scale=0.9)
    from crosslayer.models import build_model

    net = build_model("lenet300")
    plain, off = TrainConfig(epochs=1), TrainConfig(epochs=1, augment_rotate=0.0, augment_scale=0.0)
    on = TrainConfig(epochs=1, augment_rotate=5.0)
    key = _cache_key("lenet300", net, mnist_small.train, mnist_small.val, plain, 0)
    assert key == _cache_key("lenet300", net, mnist_small.train, mnist_small.val, off, 0)
    assert key != _cache_key("lenet300", net, mnist_small.train, mnist_small.val, on, 0)


def test_within_budget_takes_one_image_in_a_thousand_as_exactly_the_budget():
    from crosslayer.train import within_budget

    one_image = 100.0 * (0.986 - 0.985)  # 0.10000000000000009 in floating point
    assert one_image > 0.1
    assert within_budget(one_image, 0.1)
    assert not within_budget(100.0 * (0.986 - 0.984), 0.1)


def test_hflip_mirrors_about_half_the_images_and_draws_nothing_when_off():
    from crosslayer.train import random_hflip

    x = torch.rand(256, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert random_hflip(x, False, g) is x
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())  # off: no random draw
    y = random_hflip(x, True, torch.Generator().manual_seed(1))
    mirrored = [bool(torch.equal(b, a.flip(-1))) for a, b in zip(x, y, strict=True)]
    kept = [bool(torch.equal(b, a)) for a, b in zip(x, y, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # each image either mirrored or untouched
    assert 100 < sum(mirrored) < 156
    assert torch.equal(y, random_hflip(x, True, torch.Generator().manual_seed(1)))


def test_flip_option_off_keeps_old_cache_keys(mnist_small):
    from crosslayer.models import build_model

    net = build_model("lenet300")
    plain = TrainConfig(epochs=1)
    key = _cache_key("lenet300", net, mnist_small.train, mnist_small.val, plain, 0)
    assert key == _cache_key("lenet300", net, mnist_small.train, mnist_small.val,
                             TrainConfig(epochs=1, augment_flip=False), 0)
    assert key != _cache_key("lenet300", net, mnist_small.train, mnist_small.val,
                             TrainConfig(epochs=1, augment_flip=True), 0)

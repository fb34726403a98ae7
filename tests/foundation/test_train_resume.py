"""Resumable training: a training split into chunks ends with exactly the weights of one uninterrupted run."""

import torch

from crosslayer.data import ImageDataset
from crosslayer.train import TrainConfig, fit, fit_cached
from user_models import build_user_model


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 12, 12, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()
    return ImageDataset("toy", "train", x, y, ("a", "b", "c", "d"), "mem")


def test_chunked_training_equals_one_run(tmp_path):
    train, val = _data(96, 0), _data(32, 1)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, augment_shift=1)
    whole = build_user_model("mobilenet_tiny", num_classes=4, image_size=12)  # BN + dropout-free, SE
    ref = fit(whole, train, val, cfg, seed=3)
    chunked = build_user_model("mobilenet_tiny", num_classes=4, image_size=12)
    first = fit_cached("m", chunked, train, val, cfg, seed=3, cache=tmp_path, max_epochs=2)
    assert not first.finished and len(first.history) == 2
    entries = [p.name for p in (tmp_path / "trained").glob("*.pt") if not p.name.endswith(".partial.pt")]
    assert not entries, "an unfinished training never enters the cache"
    again = build_user_model("mobilenet_tiny", num_classes=4, image_size=12)
    rest = fit_cached("m", again, train, val, cfg, seed=3, cache=tmp_path, max_epochs=2)
    assert rest.finished and [h["val_accuracy"] for h in rest.history] == [h["val_accuracy"] for h in ref.history]
    for (k, a), b in zip(whole.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not list((tmp_path / "trained").glob("*.partial.pt"))
    cached = fit_cached("m", build_user_model("mobilenet_tiny", num_classes=4, image_size=12), train, val, cfg,
                        seed=3, cache=tmp_path)
    assert cached.cached and cached.best_epoch == ref.best_epoch


def test_keep_pruned_zeros_holds_pruned_weights_at_zero_through_steps() -> None:
    from torch import nn

    from crosslayer.train import keep_pruned_zeros

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert keep_pruned_zeros(net) is None  # nothing pruned: no hook
    with torch.no_grad():
        net[0].weight[0, :2] = 0.0
    hook = keep_pruned_zeros(net)
    assert hook is not None
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).square().sum().backward()
        opt.step()
        hook(net)
    assert torch.equal(net[0].weight[0, :2], torch.zeros(2)) and bool((net[0].weight[1:] != 0).all())

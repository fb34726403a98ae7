"""Memory-adaptive training recovers a faulty chip's accuracy; the budget rule; pruned zeros stay zero."""

from __future__ import annotations

import torch
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.memory import (
    AdaptConfig,
    ChipAccuracy,
    builtin_curve,
    chip_accuracy,
    lowest_within_budget,
    memory_adaptive_train,
    memory_layout,
    sample_chip,
    weight_targets,
)

CURVE = builtin_curve("kc705b-28nm-probit")


def test_mat_recovers_the_chip_it_was_trained_for(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    tensors, width = memory_layout(weight_targets(lenet5_trained))
    chip = sample_chip(tensors, width, CURVE, v_low=0.45, seed=0, mode="flip")
    test = mnist_small.test.subset(1000)  # held out: neither training nor the best-epoch choice sees it
    free = chip_accuracy(lenet5_trained, test, [chip], 1.0).mean
    conventional = chip_accuracy(lenet5_trained, test, [chip], 0.45).mean
    adapted, res = memory_adaptive_train(lenet5_trained, chip, 0.45, mnist_small.train.subset(2000),
                                         mnist_small.val.subset(500), AdaptConfig(epochs=1, lr=1e-3), seed=0)
    after = chip_accuracy(adapted, test, [chip], 0.45).mean
    assert conventional < free - 0.03  # about 8 % of the stored bits fail: the chip costs several points
    assert after > conventional + 0.02 and res.best_epoch == 1
    assert not any(hasattr(m, "parametrizations") for m in adapted.modules())  # a plain model again


def test_mat_keeps_pruned_zeros_and_the_start_when_nothing_helps(lenet5_trained: nn.Module,
                                                                 mnist_small: DataSplits) -> None:
    with torch.no_grad():
        lenet5_trained.fc1.weight[:, :400] = 0.0
    tensors, width = memory_layout(weight_targets(lenet5_trained))
    chip = sample_chip(tensors, width, CURVE, v_low=0.59, seed=1)
    # at 0.59 V the chip has no faulty bit on this small memory: training cannot beat the start on validation
    assert chip.fault_count(0.59) == 0
    adapted, res = memory_adaptive_train(lenet5_trained, chip, 0.59, mnist_small.train.subset(300),
                                         mnist_small.val.subset(200), AdaptConfig(epochs=1, lr=0.05), seed=0)
    assert bool((adapted.fc1.weight[:, :400] == 0).all())
    if res.best_epoch == 0:
        assert all(torch.equal(a, b) for a, b in zip(adapted.state_dict().values(),
                                                     lenet5_trained.state_dict().values(), strict=True))


def test_lowest_within_budget_walks_down_and_stops_at_the_first_failure() -> None:
    pts = [ChipAccuracy(1.0, (0.99, 0.99)), ChipAccuracy(0.5, (0.985, 0.983)), ChipAccuracy(0.45, (0.97, 0.99)),
           ChipAccuracy(0.48, (0.95, 0.96)), ChipAccuracy(0.40, (0.5, 0.5))]
    assert lowest_within_budget(pts, 0.99, 1.0) == 0.5  # 0.48 fails first; 0.45 passing below it does not count
    assert lowest_within_budget(pts, 0.99, 5.0) == 0.45
    assert lowest_within_budget(pts, 0.999, 0.5) is None
    assert lowest_within_budget(pts[:1], 0.999, 0.9) == 1.0  # 0.9 pp loss, exactly on the budget's edge
    p = ChipAccuracy(0.5, (0.9, 0.8, 1.0))
    assert abs(p.mean - 0.9) < 1e-12 and p.worst == 0.8 and 0.08 < p.std < 0.09

"""pareto_sweep: every point measured on validation and test, the front non-dominated, the best point chosen on
validation only; on LeNet-300-100 and on a user-style model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from crosslayer import ExploreConfig, pareto_sweep
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.explore import dominates
from crosslayer.train import within_budget


def _check(res, cfg: ExploreConfig) -> None:
    pts = res.points
    assert all(p.val_accuracy is not None for p in pts)
    cost = np.array([[-p.test_accuracy, p.storage_bits] for p in pts])
    for i in range(len(pts)):
        assert (i in res.front) == (not any(dominates(cost[j], cost[i]) for j in range(len(pts))))
    within = [i for i, p in enumerate(pts)
              if within_budget(100 * (res.baseline_val_accuracy - p.val_accuracy), cfg.budget_pp)]
    assert res.best_within_budget == bool(within)
    if within:  # the smallest storage among the points within budget on validation: test played no part
        assert res.best in within and pts[res.best].storage_bits == min(pts[i].storage_bits for i in within)
    else:
        assert pts[res.best].val_accuracy == max(p.val_accuracy for p in pts)


def test_pareto_sweep_lenet300(lenet300_trained: nn.Module, mnist_small: DataSplits) -> None:
    state = {k: v.clone() for k, v in lenet300_trained.state_dict().items()}
    cfg = ExploreConfig(schemes=("class-blind",), sparsities=(0.5, 0.9), bits=(8, 4), finetune_epochs=0,
                        budget_pp=0.5)
    res = pareto_sweep(lenet300_trained, cfg, mnist_small, seed=0)
    assert len(res.points) == 2 * 3 and 0.9 < res.baseline_accuracy <= 1 and 0.9 < res.baseline_val_accuracy <= 1
    _check(res, cfg)
    assert res.best_point.weight_bits in (8, 4) and res.best_point.storage_bits < res.points[0].storage_bits
    assert all(torch.equal(state[k], v) for k, v in lenet300_trained.state_dict().items())


def test_pareto_sweep_user_model(user_model, mnist_small: DataSplits) -> None:
    """BatchNorm and residual adds: one-shot magnitude pruning, PTQ, the storage of every parameter."""
    data = DataSplits(mnist_small.train.subset(256), mnist_small.val.subset(100), mnist_small.test.subset(100))
    cfg = ExploreConfig(schemes=("class-uniform",), sparsities=(0.5,), bits=(6,), finetune_epochs=0, budget_pp=100.0)
    res = pareto_sweep(user_model("resnet_tiny"), cfg, data, seed=0)
    assert [p.weight_bits for p in res.points] == [32, 6]
    _check(res, cfg)
    assert res.best_point.weight_bits == 6  # with a 100 pp budget every point fits: the smallest is chosen


def test_explore_config_validates() -> None:
    with pytest.raises(ConfigError, match="schemes"):
        ExploreConfig(schemes=("random",))
    with pytest.raises(ConfigError, match=r"sparsities\[\]"):
        ExploreConfig(sparsities=(1.0,))
    with pytest.raises(ConfigError, match="at least one"):
        ExploreConfig(bits=())

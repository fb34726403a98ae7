"""The learning-rate pilot of benchmarks/baseline.py: the grid is extended past an edge that holds the best rate."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
baseline = importlib.import_module("baseline")


def _rows(scores: dict[float, float]) -> list[dict[str, float]]:
    return [{"lr": lr, "best_val_accuracy": acc} for lr, acc in scores.items()]


def test_base_grid_first_then_stop_when_the_best_rate_is_inside() -> None:
    assert baseline._next_lr([]) == baseline.PILOT_LRS[0]
    assert baseline._next_lr(_rows({0.05: 0.8})) == 0.1
    assert baseline._next_lr(_rows({0.05: 0.80, 0.1: 0.83, 0.2: 0.82})) is None


def test_an_edge_holding_the_best_rate_extends_the_grid_past_it() -> None:
    assert baseline._next_lr(_rows({0.05: 0.82, 0.1: 0.77, 0.2: 0.51})) == 0.025
    assert baseline._next_lr(_rows({0.05: 0.70, 0.1: 0.77, 0.2: 0.81})) == 0.4
    # the extended point lost: the best rate is inside again
    assert baseline._next_lr(_rows({0.025: 0.815, 0.05: 0.819, 0.1: 0.77, 0.2: 0.51})) is None


def test_the_extension_stops_after_its_limit() -> None:
    scores = {0.05: 0.5, 0.1: 0.4, 0.2: 0.3}
    for _ in range(baseline.PILOT_MAX_EXTEND):
        lr = baseline._next_lr(_rows(scores))
        assert lr is not None and lr < min(scores)
        scores[lr] = max(scores.values()) + 0.01
    assert baseline._next_lr(_rows(scores)) is None

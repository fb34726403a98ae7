import json

import numpy as np
import pytest
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.explore import dominates, one_loop, pareto_front, sweep
from crosslayer.quant.pipeline import QuantizeConfig
from crosslayer.train import TrainConfig


def test_pareto_front_pure():
    # (accuracy max, bits min)
    pts = [[0.99, 100], [0.98, 50], [0.97, 60], [0.99, 120], [0.90, 10], [0.98, 50]]
    front = pareto_front(pts, maximize=[True, False])
    assert front == [0, 1, 5, 4]
    assert dominates(np.array([1, 1]), np.array([1, 2]))
    assert not dominates(np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(ConfigError, match="objectives"):
        pareto_front([[1, 2, 3]], maximize=[True, False])
    with pytest.raises(ConfigError, match="finite"):
        pareto_front([[float("nan"), 2]], maximize=[True, False])


def test_pareto_front_is_exactly_the_non_dominated_set():
    rng = np.random.default_rng(0)
    pts = rng.random((60, 3))
    front = set(pareto_front(pts, maximize=[True, False, False]))
    cost = pts * np.array([-1, 1, 1])
    for i in range(len(pts)):
        dominated = any(dominates(cost[j], cost[i]) for j in range(len(pts)))
        assert (i in front) == (not dominated)


def test_sweep_points_and_storage(lenet300_trained, mnist_small):
    pts = sweep(lenet300_trained, mnist_small, schemes=("class-blind", "class-uniform"), sparsities=(0.5, 0.9),
                bits=(8, 4), finetune=TrainConfig(epochs=0), seed=0)
    assert len(pts) == 2 * 2 * 3
    by = {(p.scheme, round(p.sparsity, 2), p.weight_bits): p for p in pts}
    float90, q4_90 = by[("class-blind", 0.9, 32)], by[("class-blind", 0.9, 4)]
    # Per stored entry: 4-bit code + 5-bit index vs. 32-bit value + 5-bit index, i.e. about 37 / 9 = 4.1x.
    assert float90.storage_bits / 4.5 < q4_90.storage_bits < float90.storage_bits / 3.5
    assert float90.nonzero_macs < 0.15 * float90.macs
    assert by[("class-blind", 0.5, 8)].test_accuracy > 0.9


def test_one_loop_joint_keeps_sparsity_and_quantizes(lenet300_trained, mnist_small):
    data = DataSplits(mnist_small.train.subset(2000), mnist_small.val, mnist_small.test.subset(1000))
    res = one_loop(lenet300_trained, data, (0.5, 0.8),
                   QuantizeConfig(mode="qat", weight_bits=4, act_bits=8, qat_epochs=1), seed=0)
    assert res.sparsity >= 0.79
    # 20 % density x (4-bit code + 5-bit index, plus fillers) is about 1.9 bits per weight: ~17x.
    assert 12 < res.compression_ratio < 32 / (0.2 * 9)
    assert res.test_accuracy > 0.9


def test_cli_explore_runs_on_a_run_dir(tmp_path, data_dir):
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--model", "lenet300", "--out", str(run), "--epochs", "1",
                                   "--train-limit", "1500", "--optimizer", "adam", "--lr", "0.002"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "explore"
    res = CliRunner().invoke(app, ["explore", str(run), "--out", str(out), "--sparsities", "0.5,0.9",
                                   "--bits", "8", "--schemes", "class-blind", "--finetune-epochs", "0", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())["explore"]
    assert m["points"] == 4 and m["pareto_points"] >= 1
    assert "data:image/png" in (out / "report.html").read_text()
    bad = CliRunner().invoke(app, ["explore", str(run), "--out", str(out), "--sparsities", "0.5,x"])
    assert bad.exit_code == 2 and "comma-separated" in bad.output

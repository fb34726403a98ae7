"""Selection logic (with a synthetic score), MAC-weighted power, and the ``approximate`` flow stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from crosslayer.approx import (
    SweepPoint,
    approximable_layers,
    assignment_of,
    get_multiplier,
    greedy_select,
    layer_macs,
    paired_loss,
    power_saving,
    sensitivity_ranking,
)
from crosslayer.approx.stage import ApproximateConfig, approximate_stage
from crosslayer.config import from_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.flow import StageContext, load_flow_config, run_flow
from crosslayer.rundir import RunDir

LAYERS = ["conv1", "conv2", "fc1", "fc2"]
MACS = {"conv1": 288_000, "conv2": 1_600_000, "fc1": 400_000, "fc2": 5_000}


def test_macs_and_power_saving(lenet5_int8: nn.Module) -> None:
    macs = layer_macs(lenet5_int8, torch.zeros(1, 1, 28, 28))
    assert macs == {"conv1": 20 * 24 * 24 * 25, "conv2": 50 * 8 * 8 * 500, "fc1": 500 * 800, "fc2": 10 * 500}
    half = get_multiplier("etm4")  # relative power 0.5
    assert power_saving({}, macs) == 0.0
    assert power_saving({n: half for n in macs}, macs) == pytest.approx(0.5)
    assert power_saving({"conv2": half}, macs) == pytest.approx(0.5 * macs["conv2"] / sum(macs.values()))


def test_sensitivity_ranking_orders_by_mean_drop() -> None:
    pts = [SweepPoint("a", "fc1", 1, 0, 0.5, 0.90), SweepPoint("b", "fc1", 1, 0, 0.5, 0.98),
           SweepPoint("a", "conv1", 1, 0, 0.5, 0.97), SweepPoint("b", "conv1", 1, 0, 0.5, 0.97),
           SweepPoint("a", "*", 1, 0, 0.5, 0.1)]
    assert sensitivity_ranking(pts, 0.98) == ["conv1", "fc1"]
    with pytest.raises(StageError):
        sensitivity_ranking(pts[-1:], 0.98)


def test_greedy_takes_cheapest_within_budget_in_ranking_order(lenet5_int8: nn.Module) -> None:
    # Synthetic accuracy: each approximate layer costs a fixed amount per multiplier.
    cost = {"etm4": 0.004, "drum4": 0.002, "trunc4": 0.0}
    penalty = {"conv1": 1.0, "conv2": 1.0, "fc1": 3.0, "fc2": 1.0}

    def score(model: nn.Module) -> float:
        return 0.99 - sum(cost.get(a["name"], 0.0) * penalty[n] for n, a in assignment_of(model).items())

    mults = [get_multiplier(n) for n in ("exact", "trunc4", "drum4", "etm4")]  # power 1, .84, .625, .5
    sel = greedy_select(lenet5_int8, mults, ["fc1", "conv2", "conv1", "fc2"], score, budget_pp=0.7, macs=MACS)
    # fc1 first: etm4 costs 1.2 pp > 0.7, drum4 0.6 pp fits; conv2 then: etm4 (0.4) breaks, drum4 (0.2) breaks
    # (0.6 + 0.2 > 0.7), trunc4 fits; same for the rest.
    assert {n: m.name for n, m in sel.assignment.items()} == {"fc1": "drum4", "conv2": "trunc4", "conv1": "trunc4",
                                                              "fc2": "trunc4"}
    assert sel.loss_pp == pytest.approx(0.6) and sel.trace[0] == {
        "layer": "fc1", "multiplier": "etm4", "accuracy": pytest.approx(0.978), "loss_pp": pytest.approx(1.2),
        "margin_pp": 0.0, "accepted": False}
    assert sel.margin_pp == 0.0 and sel.images == 0  # a float score gives no per-image outcomes
    assert 0 < sel.power_saving < 1
    with pytest.raises(StageError, match="not quantized layers"):
        greedy_select(lenet5_int8, mults, ["fc7"], score, budget_pp=1, macs=MACS)


def test_paired_loss_standard_error() -> None:
    ref = torch.tensor([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    cand = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], dtype=torch.bool)  # b = 2 lost, c = 1 gained
    loss, se = paired_loss(ref, cand)
    assert loss == pytest.approx(0.1) and se == pytest.approx(((2 + 1) - 1 / 10) ** 0.5 / 10)
    assert paired_loss(ref, ref) == (0.0, 0.0)
    with pytest.raises(StageError, match="differ in length"):
        paired_loss(ref, cand[:5])


def _outcomes(n: int, wrong: set[int]) -> torch.Tensor:
    out = torch.ones(n, dtype=torch.bool)
    out[sorted(wrong)] = False
    return out


def test_greedy_margin_rejects_noisy_loss(lenet5_int8: nn.Module) -> None:
    """Per-image outcomes: an observed loss within budget is refused when loss + z * SE is not."""
    n = 1000
    ref = _outcomes(n, set(range(10)))  # 99.0 %
    # drum4 on fc1: loses 6 images, gains 2 -> loss 0.4 pp, SE = sqrt(8 - 16/1000)/1000 = 0.283 pp
    # trunc4: loses 1 image -> loss 0.1 pp, SE = 0.1 pp
    per_image = {"drum4": _outcomes(n, set(range(2, 10)) | set(range(100, 106))),
                 "trunc4": _outcomes(n, set(range(10)) | {100})}

    def score(model: nn.Module) -> torch.Tensor:
        names = {a["name"] for a in assignment_of(model).values()} - {"exact"}
        return per_image[names.pop()] if names else ref

    mults = [get_multiplier(n) for n in ("exact", "trunc4", "drum4")]
    sel = greedy_select(lenet5_int8, mults, ["fc1"], score, budget_pp=0.5, macs=MACS, reference=ref,
                        confidence=0.95)
    first = sel.trace[0]
    assert first["multiplier"] == "drum4" and first["loss_pp"] == pytest.approx(0.4)
    assert first["margin_pp"] == pytest.approx(1.6449 * (8 - 16 / 1000) ** 0.5 / 10, rel=1e-3)
    assert not first["accepted"]  # 0.4 pp < 0.5 pp, but 0.4 + 0.47 > 0.5
    assert {k: m.name for k, m in sel.assignment.items()} == {"fc1": "trunc4"}
    assert sel.loss_bound_pp == pytest.approx(0.1 + 1.6449 * 0.1, rel=1e-3) and sel.images == n
    loose = greedy_select(lenet5_int8, mults, ["fc1"], score, budget_pp=0.5, macs=MACS, reference=ref,
                          confidence=0.5)  # z = 0: the plain rule takes drum4
    assert {k: m.name for k, m in loose.assignment.items()} == {"fc1": "drum4"}
    with pytest.raises(ConfigError, match="confidence"):
        greedy_select(lenet5_int8, mults, ["fc1"], score, budget_pp=0.5, macs=MACS, confidence=1.0)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown multiplier 'drum99'"):
        from_mapping(ApproximateConfig, {"multipliers": ["drum99"]}, section="approximate")
    with pytest.raises(ConfigError, match="budget_pp"):
        from_mapping(ApproximateConfig, {"budget_pp": -1.0}, section="approximate")


def test_stage_uses_resilience_ranking(lenet5_int8: nn.Module, mnist_small: DataSplits, tmp_path: Path) -> None:
    data = DataSplits(train=mnist_small.train.subset(500), val=mnist_small.val.subset(200),
                      test=mnist_small.test.subset(200))
    ctx = StageContext(run_dir=tmp_path, flow=load_flow_config(None).flow, data=data, model=lenet5_int8,
                       device=torch.device("cpu"), seed=0, artifacts={"resilience_ranking": ["fc2", "conv1"]})
    cfg = ApproximateConfig(multipliers=("exact", "trunc6", "mitchell"), per_layer_sweep=False, budget_pp=1.0)
    res = approximate_stage(ctx, cfg)
    rep = res.report
    assert res.model is None and set(res.publish) == {"approximate"}
    assign = res.artifacts["multiplier_assignment"]
    assert set(assign) == set(LAYERS) and all(set(v) == {"name", "relative_power"} for v in assign.values())
    assert rep.tables[-1].rows[0][0] == "fc2"  # greedy visited the ranking's first layer first
    assert any("resilience stage's ranking" in n for n in rep.notes)
    assert not any("int8 copy" in n for n in rep.notes)  # the input was already int8
    assert rep.metrics["accuracy_loss_pp"] <= 100 and 0 <= rep.metrics["test_accuracy"] <= 1
    assert 0 <= rep.metrics["multiplier_power_saving"] < 1
    assert approximable_layers(res.publish["approximate"]) == LAYERS


def test_stage_in_a_flow_after_baseline(tmp_path: Path) -> None:
    toml = tmp_path / "flow.toml"
    toml.write_text('[flow]\nstages = ["baseline", "approximate"]\ntrain_limit = 2000\ntest_limit = 300\n'
                    '[baseline]\nepochs = 1\n'
                    '[approximate]\nmultipliers = ["exact", "trunc6", "etm4"]\nselect_limit = 200\n'
                    'calibration_images = 200\n')
    reports = run_flow(load_flow_config(toml), tmp_path / "run")
    rep = reports[-1]
    assert rep.stage == "approximate"
    assert any("int8 copy" in n for n in rep.notes) and any("no resilience_ranking" in n for n in rep.notes)
    assert len(rep.figures) == 2 and all(f.png[:4] == b"\x89PNG" for f in rep.figures)  # MED and power plots
    assert set(rep.metrics["multiplier_assignment"]) == set(LAYERS)
    assert rep.metrics["test_samples"] == 300 and rep.metrics["greedy_evaluations"] >= 1
    assert set(rep.metrics["uniform_sweep"]) == {"exact", "trunc6", "etm4"}
    # the acceptance rule: observed loss plus the paired confidence margin within the budget
    assert rep.metrics["selection_margin_pp"] >= 0 and rep.metrics["selection_confidence"] == 0.99
    assert (rep.metrics["selection_accuracy_loss_pp"] + rep.metrics["selection_margin_pp"] <= 0.5 + 1e-9
            or rep.metrics["approximated_layers"] == 0)
    assert (tmp_path / "run" / "reports" / "approximate.json").is_file()
    # the approximate model is kept in the run directory as data and comes back with its multipliers
    assert not any("not kept" in n for n in rep.notes)
    back = RunDir(tmp_path / "run").load_model("approximate")
    chosen = {n: a["name"] for n, a in rep.metrics["multiplier_assignment"].items()}
    kept = {n: a["name"] for n, a in assignment_of(back).items()}
    assert kept and all(chosen[n] == m for n, m in kept.items())
    assert {n for n, m in chosen.items() if m != "exact"} <= set(kept)
    # a fresh process (a command reading the run) has imported no step yet: the codecs are found all the same,
    # and `--stage approximate` names the model the stage published
    code = ("import sys; from crosslayer import load_run_model; from crosslayer.approx import assignment_of; "
            "print(sorted(assignment_of(load_run_model(sys.argv[1], 'approximate'))))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted(kept))

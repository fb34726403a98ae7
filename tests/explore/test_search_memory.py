"""The co-design search's weight-memory voltage knob (issue 19): off, the search is unchanged; on, a design's
accuracy is read through one chip's faults at its voltage and its energy prices the weight buffer there."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
import pytest
import torch

from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.explore.search import SearchConfig, build_space, memory_target, search
from crosslayer.explore.search_eval import FineTune, HardwareTarget, build_design, hardware_cost, measure
from crosslayer.explore.search_report import fill_report
from crosslayer.explore.search_space import Design, LayerChoice, SearchSpace
from crosslayer.hw import load_accelerator
from crosslayer.hw.voltage import at_memory_voltage, memory_energy_ratio
from crosslayer.memory import builtin_curve
from crosslayer.models import build_model
from crosslayer.report import Report

TINY = {"trials": 3, "trial_epochs": 0, "trial_train_limit": 400, "trial_val_limit": 150, "final_points": 1,
        "final_epochs": 0, "final_train_limit": 400, "final_slack_pp": 100.0, "startup_trials": 2, "hw_samples": 8,
        "multipliers": ("exact",), "weight_bits": (4, 8), "act_bits": (8,)}
LAYERS = ("conv1", "conv2", "fc1", "fc2")
# mixed widths on purpose: one chip holds layers of different word widths
MIXED = {n: LayerChoice(0.5, wb, 8) for n, wb in zip(LAYERS, (8, 4, 6, 8), strict=True)}


@pytest.fixture(scope="module")
def tiny(mnist_small: DataSplits) -> DataSplits:
    return DataSplits(mnist_small.train.subset(400), mnist_small.val.subset(150), mnist_small.test.subset(300))


@pytest.fixture
def broken_curve(tmp_path: Path) -> Path:
    """A user table whose memory fails completely at 0.5 V (every bit stuck at a random level)."""
    p = tmp_path / "broken.csv"
    p.write_text("voltage, ber\n0.5, 1.0\n0.6, 0.001\n0.8, 0\n1.0, 0\n", encoding="utf-8")
    return p


def _cfg(**kw: object) -> SearchConfig:
    return SearchConfig(**{**TINY, **kw})  # type: ignore[arg-type]


def _hw(cfg: SearchConfig, tiny: DataSplits) -> HardwareTarget:
    return HardwareTarget(load_accelerator(cfg.accelerator), tiny.val.images[:8], memory=memory_target(cfg))


def test_design_json_round_trip_with_and_without_the_voltage() -> None:
    plain = Design(MIXED, "RS")
    assert "memory_voltage" not in plain.to_json()  # records of a search without the knob are unchanged
    assert Design.from_json(plain.to_json()) == plain and plain.memory_voltage is None
    low = Design(MIXED, "RS", memory_voltage=0.45)
    assert Design.from_json(low.to_json()) == low and Design.from_json(low.to_json()).memory_voltage == 0.45
    assert low.summary().endswith("memory 0.45 V") and "memory" not in plain.summary()
    with pytest.raises(ConfigError, match="not a design record"):
        Design.from_json({**low.to_json(), "memory_voltage": "low"})


def test_bad_voltages_and_combinations_are_config_errors(tmp_path: Path) -> None:
    ok = _cfg(memory_voltages=(1.0, 0.5, 0.45))
    assert memory_target(ok) is not None and memory_target(_cfg()) is None
    with pytest.raises(ConfigError, match=r"memory_voltages\[1\] = nan is not a finite number"):
        _cfg(memory_voltages=(0.5, math.nan))
    with pytest.raises(ConfigError, match="not a voltage"):
        _cfg(memory_voltages=(0.5, -0.1))
    with pytest.raises(ConfigError, match=r"memory_voltages: voltage = 0.35 V is outside curve .*\[0.4, 1\]"):
        _cfg(memory_voltages=(0.5, 0.35))
    with pytest.raises(ConfigError, match="outside curve"):
        _cfg(memory_voltages=(1.2,))
    with pytest.raises(ConfigError, match=r"outside curve 'kc705b-28nm'"):  # the measured table stops at 0.53 V
        _cfg(memory_voltages=(0.5,), memory_curve="kc705b-28nm")
    with pytest.raises(ConfigError, match="twice"):
        _cfg(memory_voltages=(0.5, 0.45, 0.5))
    with pytest.raises(ConfigError, match="unknown BER curve"):
        _cfg(memory_voltages=(0.5,), memory_curve="sram-7nm")
    with pytest.raises(ConfigError, match="imc"):
        _cfg(memory_voltages=(0.5,), imc=True)
    with pytest.raises(ConfigError, match="exact"):
        _cfg(memory_voltages=(0.5,), multipliers=("exact", "drum5"))
    with pytest.raises(ConfigError, match="memory_leakage_share"):
        _cfg(memory_voltages=(0.5,), memory_leakage_share=1.5)
    _cfg(memory_curve="sram-7nm", imc=True, multipliers=("exact", "drum5"))  # off: the memory options are inert


def test_knob_off_asks_and_describes_what_it_did_before() -> None:
    model = build_model("lenet5")
    before = SearchSpace.for_model(model, multipliers=("exact",), weight_bits=(4, 8), act_bits=(8,))
    off = build_space(model, _cfg(), ())
    assert off.describe() == before.describe() and "memory_voltages" not in off.describe()
    on = build_space(model, _cfg(memory_voltages=(0.5, 0.45)), ())
    assert on.describe()["memory_voltages"] == [0.5, 0.45] and on.digest() != off.digest()
    grid = build_space(model, _cfg(sampler="grid", memory_voltages=(0.5, 0.45)), ())
    assert grid.grid_search_space()["memory_voltage"] == [0.5, 0.45]
    assert grid.grid_size == 2 * build_space(model, _cfg(sampler="grid"), ()).grid_size


def test_lower_voltage_costs_less_by_exactly_the_buffer_ratio(lenet5_trained, tiny) -> None:
    cfg = _cfg(memory_voltages=(1.0, 0.55, 0.45), memory_adapt=False)
    hw = _hw(cfg, tiny)
    assert hw.memory is not None
    energy = {}
    for v in (None, 1.0, 0.55, 0.45):
        built = build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=v), tiny, FineTune(epochs=0),
                             memory=hw.memory)
        energy[v] = measure(built, tiny.val, hw).energy
        if v is not None:  # the accelerator priced as crosslayer.hw.voltage scales it
            scaled = dataclasses.replace(hw, accelerator=at_memory_voltage(hw.accelerator, v, hw.memory.energy))
            assert energy[v] == pytest.approx(hardware_cost(built.quantized, {}, "RS", scaled)[0], rel=1e-12)
    assert energy[1.0] == energy[None]  # nominal: the cost model's own figure
    assert energy[0.45] < energy[0.55] < energy[1.0]
    # the priced accelerator: the glb buffer's per-access energy times E(V)/E(Vn) (CV^2 at the curve's 1.0 V
    # nominal), every other level as it was
    for v in (0.55, 0.45):
        scaled_acc = hw.memory.accelerator(hw.accelerator, v)
        assert memory_energy_ratio(v) == pytest.approx(v**2)
        assert scaled_acc.energy.glb == hw.accelerator.energy.glb * memory_energy_ratio(v)
        assert dataclasses.replace(scaled_acc.energy, glb=hw.accelerator.energy.glb) == hw.accelerator.energy
    rf = _hw(dataclasses.replace(cfg, memory_buffer="rf"), tiny)
    assert rf.memory is not None and rf.memory.accelerator(rf.accelerator, 0.45).energy.rf == \
        rf.accelerator.energy.rf * memory_energy_ratio(0.45)


def test_accuracy_is_read_through_the_chip(lenet5_trained, tiny, broken_curve: Path) -> None:
    cfg = _cfg(memory_voltages=(1.0, 0.6, 0.5), memory_curve=str(broken_curve), memory_adapt=False)
    hw = _hw(cfg, tiny)
    figures, faults = {}, {}
    for v in (None, 1.0, 0.6, 0.5):
        built = build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=v), tiny, FineTune(epochs=0),
                             memory=hw.memory)
        figures[v] = measure(built, tiny.val, hw).accuracy
        faults[v] = sum(c.fault_count(v) for c in built.chips.values()) if v is not None else 0
    assert figures[None] > 0.9
    assert figures[1.0] == figures[None] and faults[1.0] == 0  # nominal: exactly the fault-free figure
    assert 0 < faults[0.6] < faults[0.5]
    bits = sum(c.bits for c in build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=0.5), tiny,
                                            FineTune(epochs=0), memory=hw.memory).chips.values())
    assert faults[0.5] == bits  # BER 1: every stored bit fails
    assert figures[0.5] < 0.3  # every weight a random word: near chance (10 classes)
    again = build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=0.5), tiny, FineTune(epochs=0),
                         memory=hw.memory)
    assert measure(again, tiny.val, hw).accuracy == figures[0.5]  # same seed, same chip, same figure
    other = _hw(dataclasses.replace(cfg, memory_chip_seed=1), tiny)
    chip0 = build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=0.6), tiny, FineTune(epochs=0),
                         memory=hw.memory).chips["fc1"].layers[""]
    chip1 = build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=0.6), tiny, FineTune(epochs=0),
                         memory=other.memory).chips["fc1"].layers[""]
    assert not (chip0.index.shape == chip1.index.shape and torch.equal(chip0.index, chip1.index))  # another chip
    with pytest.raises(StageError, match="no memory model"):
        build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=0.5), tiny, FineTune(epochs=0))


def test_memory_adaptive_fine_tuning_recovers_accuracy_on_the_chip(lenet5_trained, tiny) -> None:
    v = 0.40  # probit extrapolation: BER 35 %, stuck-at-0
    assert builtin_curve("kc705b-28nm-probit").ber(v) > 0.3
    on = _cfg(memory_voltages=(v,))
    assert on.memory_adapt and on.memory_adapt_lr == 1e-3  # the defaults
    val, test = {}, {}
    for name, cfg in (("on", on), ("off", dataclasses.replace(on, memory_adapt=False))):
        hw = _hw(cfg, tiny)
        built = build_design(lenet5_trained, Design(MIXED, "RS", memory_voltage=v), tiny, FineTune(epochs=1),
                             seed=0, memory=hw.memory)
        val[name], test[name] = measure(built, tiny.val, hw).accuracy, measure(built, tiny.test, hw).accuracy
    assert val["on"] >= val["off"]  # MAT keeps its starting weights unless an epoch beats them through the chip
    assert test["on"] >= test["off"] + 0.03  # and on held-out images the chip's faults cost less after it


def _trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="search", storage=f"sqlite:///{db}").trials


def test_search_with_the_knob_chooses_a_voltage_and_reports_it(lenet5_trained, tiny, tmp_path: Path) -> None:
    # off: memory options other than the voltages change nothing (same params, same figures, same records)
    a = search(lenet5_trained, _cfg(final_points=0), tiny, seed=2, storage=tmp_path / "a.db")
    b = search(lenet5_trained, _cfg(final_points=0, memory_chip_seed=7, memory_curve="kc705b-28nm"), tiny, seed=2,
               storage=tmp_path / "b.db")
    keys = ("accuracy", "energy", "latency_ms", "size_bytes", "loss_pp")
    assert [(r.params, r.design, [r.metrics[k] for k in keys]) for r in a.trials] == \
           [(r.params, r.design, [r.metrics[k] for k in keys]) for r in b.trials]
    assert all("memory_voltage" not in r.params and "memory_voltage" not in t.user_attrs["design"]
               for r, t in zip(a.trials, _trials(tmp_path / "a.db"), strict=True))
    volts = (1.0, 0.5, 0.45)
    res = search(lenet5_trained, _cfg(memory_voltages=volts), tiny, seed=2, storage=tmp_path / "m.db")
    assert res.counts == {"COMPLETE": 3}
    for r in res.trials:
        assert r.design is not None and r.design.memory_voltage in volts
        assert r.params["memory_voltage"] == r.design.memory_voltage == r.metrics["memory_voltage"]
        assert r.metrics["weight_memory_energy_ratio"] == pytest.approx(r.design.memory_voltage ** 2)
    assert res.chosen is not None and res.chosen.design.memory_voltage in volts
    for other in (_cfg(trials=4, memory_voltages=volts, memory_chip_seed=1), _cfg(trials=4)):
        with pytest.raises(ConfigError, match="another search"):  # another chip, or no knob: not this study
            search(lenet5_trained, other, tiny, seed=2, storage=tmp_path / "m.db")
    rep = Report("search")
    fill_report(rep, res)
    final = next(t for t in rep.tables if t.title.startswith("Pareto set"))
    assert "memory V" in final.columns
    assert final.rows[0][final.columns.index("memory V")] == res.chosen.design.memory_voltage
    pareto = next(t for t in rep.tables if t.title.startswith("Pareto trials"))
    assert "memory V" in pareto.columns
    assert rep.metrics["memory_voltage"] == res.chosen.design.memory_voltage
    plain = Report("search")
    fill_report(plain, a)
    assert all("memory V" not in t.columns for t in plain.tables)


def test_grid_sampler_sweeps_the_voltage_as_a_third_axis(lenet5_trained, tiny, tmp_path: Path) -> None:
    cfg = _cfg(sampler="grid", trials=5, final_points=0, grid_schemes=("class-uniform",), grid_sparsities=(0.5,),
               grid_bits=(8,), memory_voltages=(1.0, 0.45))
    res = search(lenet5_trained, cfg, tiny, seed=0, storage=tmp_path / "g.db")
    assert res.counts == {"COMPLETE": 2} and any("capped to 2" in n for n in res.notes)
    by_v = {r.design.memory_voltage: r for r in res.trials if r.design is not None}
    assert set(by_v) == {1.0, 0.45}
    assert by_v[1.0].design.layers == by_v[0.45].design.layers  # the same grid point at two voltages
    assert by_v[0.45].metrics["energy"] < by_v[1.0].metrics["energy"]
    assert by_v[1.0].metrics["memory_faulty_bits"] == 0 < by_v[0.45].metrics["memory_faulty_bits"]

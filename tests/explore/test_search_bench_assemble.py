"""benchmarks/search.py: re-running one part on a machine without the other parts' job files keeps their
figures (listed under ``kept_from_earlier_run``), and the energy corner is set against the sequential figures."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
bench = importlib.import_module("search")


def _earlier() -> dict[str, object]:
    return {"model": "lenet5", "baseline": {"val_accuracy": 0.99}, "hypervolume": {"search": 1.4},
            "sequential": [{"val": {"energy": 6.0e6}}, {"val": {"energy": 7.5e6}}],
            "energy_gain_vs_sequential": 1.09, "parts_missing": [], "machine": {"cpus": 2}}


def test_a_part_run_alone_keeps_the_other_parts_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "SMOKE", False)
    (tmp_path / "search.json").write_text(json.dumps(_earlier()))
    new = {"model": "lenet5", "baseline": None, "energy_corner": {"energy": 3.0e6},
           "parts_missing": ["hv", "final", "workers"]}
    out = bench._keep_earlier(new)
    assert out["kept_from_earlier_run"] == ["baseline", "energy_gain_vs_sequential", "hypervolume", "sequential"]
    assert out["baseline"] == {"val_accuracy": 0.99} and out["hypervolume"] == {"search": 1.4}
    assert "machine" not in out                                 # the new run writes its own machine line
    assert out["parts_missing"] == ["workers"]                 # hv and final are in the file
    assert out["energy_corner"]["sequential_val_energy_over_corner"] == [2.0, 2.5]
    assert list(out)[:3] == ["model", "baseline", "hypervolume"]  # the file's key order is kept


def test_without_an_earlier_file_nothing_is_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "SMOKE", False)
    new = {"model": "lenet5", "parts_missing": ["hv"]}
    assert bench._keep_earlier(dict(new)) == new


def test_a_fresh_seed_run_moves_the_old_headline_to_earlier_runs(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "SMOKE", False)
    old = {**_earlier(), "seeds": [6, 7, 8], "resnet20": {"trials": []}}
    (tmp_path / "search.json").write_text(json.dumps(old))
    new = {"model": "lenet5", "seeds": [9, 10, 11], "space": {"act_bits": [3, 4]}, "hypervolume": None,
           "parts_missing": ["hv", "final", "resnet"]}
    out = bench._keep_earlier(new)
    assert out["kept_from_earlier_run"] == ["baseline", "resnet20"]  # nothing tied to the old seeds
    assert "hypervolume" not in out or out["hypervolume"] is None
    assert "sequential" not in out and "energy_gain_vs_sequential" not in out
    row = out["earlier_runs"][0]
    assert row["seeds"] == [6, 7, 8] and row["hypervolume"] == {"search": 1.4}
    assert row["energy_gain_vs_sequential"] == 1.09 and row["space"] == {"act_bits": [4, 5, 6, 8]}
    assert row["why_kept"] == "another set of seeds (this run: 9, 10, 11)" and "baseline" not in row
    assert out["parts_missing"] == ["hv", "final"]
    # assembling again with the same seeds carries the history on without adding to it
    (tmp_path / "search.json").write_text(json.dumps(out))
    again = bench._keep_earlier({**new, "hypervolume": {"search": 1.8}})
    assert again["earlier_runs"] == out["earlier_runs"]


def test_a_run_on_another_baseline_training_keeps_the_old_headline(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same seeds re-run on another training of the baseline: the old headline moves to ``earlier_runs`` with
    the baseline it ran on, and no seed figure of the old run is kept beside the new ones."""
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "SMOKE", False)
    old = {**_earlier(), "seeds": [12, 13, 14], "baseline": {"test_accuracy": 0.9880}, "resnet20": {"trials": []}}
    (tmp_path / "search.json").write_text(json.dumps(old))
    new = {"model": "lenet5", "seeds": [12, 13, 14], "space": {"act_bits": [3, 4]}, "hypervolume": {"search": 1.5},
           "baseline": {"test_accuracy": 0.9878}, "parts_missing": ["resnet"]}
    out = bench._keep_earlier(new)
    row = out["earlier_runs"][0]
    assert row["seeds"] == [12, 13, 14] and row["hypervolume"] == {"search": 1.4}
    assert row["baseline"] == {"test_accuracy": 0.9880} and "0.9880" in row["why_kept"]
    assert out["hypervolume"] == {"search": 1.5}
    assert "sequential" not in out and "energy_gain_vs_sequential" not in out  # the old run's seed figures
    assert out["kept_from_earlier_run"] == ["resnet20"]
    # the same training (a float32 reading of the same count) is not another run
    (tmp_path / "search.json").write_text(json.dumps(out))
    again = bench._keep_earlier({**new, "baseline": {"test_accuracy": 0.9878000020980835}})
    assert again["earlier_runs"] == out["earlier_runs"]

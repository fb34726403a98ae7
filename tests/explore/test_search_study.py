"""The search's study: trials, Pareto set finished in full, resuming, failed trials, local workers."""

from __future__ import annotations

import importlib
import sqlite3
import warnings
from pathlib import Path

import optuna
import pytest

from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.explore.search import SearchConfig, search
from crosslayer.explore.search_study import open_storage
from crosslayer.quant import QuantLayer

search_mod = importlib.import_module("crosslayer.explore.search")  # the module (the package exports the verb)

TINY = {"trials": 3, "trial_epochs": 0, "trial_train_limit": 400, "trial_val_limit": 150, "final_points": 1,
        "final_epochs": 0, "final_train_limit": 400, "final_slack_pp": 100.0, "startup_trials": 2, "hw_samples": 8,
        "multipliers": ("exact", "drum5"), "weight_bits": (4, 8), "act_bits": (8,)}


@pytest.fixture(scope="module")
def tiny(mnist_small: DataSplits) -> DataSplits:
    return DataSplits(mnist_small.train.subset(400), mnist_small.val.subset(150), mnist_small.test.subset(300))


def _cfg(**kw: object) -> SearchConfig:
    return SearchConfig(**{**TINY, **kw})  # type: ignore[arg-type]


def _trials(db: Path, name: str = "search") -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials


def test_search_finishes_the_pareto_set_and_resumes(lenet5_trained, tiny, tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    res = search(lenet5_trained, _cfg(), tiny, seed=3, storage=db)
    assert res.counts == {"COMPLETE": 3} and res.pareto
    assert all(r.design is not None and list(r.design.layers) == ["conv1", "conv2", "fc1", "fc2"] for r in res.trials)
    assert len(res.final) == 1 and res.chosen is res.final[0]
    p = res.chosen
    assert p.test.images == 300 and p.val.images == 150  # finals: the whole validation split, then the test split
    assert p.test_loss_pp == pytest.approx(100 * (res.baseline["test_accuracy"] - p.test.accuracy))
    assert isinstance(res.model.get_submodule("fc1"), QuantLayer)
    first = [(t.number, t.params, t.values) for t in _trials(db)]
    again = search(lenet5_trained, _cfg(trials=5), tiny, seed=3, storage=db)
    assert again.counts == {"COMPLETE": 5}
    assert [(t.number, t.params, t.values) for t in _trials(db)][:3] == first  # kept, not re-run
    assert any("resumed" in n for n in again.notes)
    with pytest.raises(ConfigError, match="another search"):
        search(lenet5_trained, _cfg(trials=6, weight_bits=(2, 8)), tiny, seed=3, storage=db)


def test_warm_start_designs_are_the_first_trials_of_a_new_study(lenet5_trained, tiny, tmp_path: Path) -> None:
    db = tmp_path / "warm.db"
    res = search(lenet5_trained, _cfg(final_points=0, warm_start=((0.0, 8, 8), (0.5, 4, 8))), tiny, seed=0,
                 storage=db)
    first, second = res.trials[0].design, res.trials[1].design
    assert first is not None and second is not None
    first_choices = {(c.sparsity, c.weight_bits, c.act_bits, c.multiplier) for c in first.layers.values()}
    assert first_choices == {(0.0, 8, 8, "exact")}
    assert {(c.sparsity, c.weight_bits) for c in second.layers.values()} == {(0.5, 4)}
    assert res.trials[0].metrics["accuracy"] >= res.trials[1].metrics["accuracy"] - 0.05
    again = search(lenet5_trained, _cfg(final_points=0, trials=4, warm_start=((0.0, 8, 8), (0.5, 4, 8))), tiny,
                   seed=0, storage=db)  # resumed: the anchors are not enqueued again
    assert again.counts == {"COMPLETE": 4}
    assert sum(1 for r in again.trials if r.params == res.trials[0].params) == 1


def test_search_with_channel_cuts_finishes_a_smaller_model(lenet5_trained, tiny, tmp_path: Path) -> None:
    db = tmp_path / "channels.db"
    cfg = _cfg(max_channel_cut=0.5, warm_start=((0.5, 8, 8, 0.5),), final_slack_pp=100.0)
    res = search(lenet5_trained, cfg, tiny, seed=1, storage=db)
    assert res.counts == {"COMPLETE": 3} and res.space.channel_groups == ("conv1", "conv2", "fc1")
    anchor = res.trials[0].design
    assert anchor is not None and anchor.channels == {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5}
    assert all(r.design is not None and len(r.design.channels) == 3 for r in res.trials)
    assert res.chosen is not None and res.model is not None
    kept = res.chosen.design.channels["conv1"]
    assert res.model.get_submodule("conv1").weight.shape[0] == max(1, 20 - round((1 - kept) * 20))
    with pytest.raises(ConfigError, match="another search"):  # the cut is part of the space's digest
        search(lenet5_trained, _cfg(trials=4, max_channel_cut=0.25), tiny, seed=1, storage=db)
    from crosslayer.explore.search_report import fill_report
    from crosslayer.report import Report

    rep = Report("search")
    fill_report(rep, res)
    layers = next(t for t in rep.tables if t.title.startswith("Per-layer"))
    col = layers.columns.index("channels kept")
    assert [r[col] for r in layers.rows if r[1] == "conv1"] == [kept]
    assert [r[col] for r in layers.rows if r[1] == "fc2"] == [""]  # the logits are not a channel group
    pareto = next(t for t in rep.tables if t.title.startswith("Pareto trials"))
    by_number = {r.number: r.design for r in res.trials}
    for row in pareto.rows:  # a Pareto trial's summary names its channel cuts
        design = by_number[row[0]]
        assert design is not None and ("channels kept" in row[-1]) == bool(design.channel_cut)
    assert len(rep.figures) == 2  # fronts and parallel coordinates (with the channels axis)


def test_same_seed_same_study(lenet5_trained, tiny, tmp_path: Path) -> None:
    a = search(lenet5_trained, _cfg(final_points=0), tiny, seed=1, storage=tmp_path / "a.db")
    b = search(lenet5_trained, _cfg(final_points=0), tiny, seed=1, storage=tmp_path / "b.db")
    assert [(r.params, r.metrics["accuracy"], r.metrics["energy"]) for r in a.trials] == \
           [(r.params, r.metrics["accuracy"], r.metrics["energy"]) for r in b.trials]


def test_a_failing_trial_is_recorded_not_fatal(lenet5_trained, tiny, tmp_path: Path, monkeypatch) -> None:
    real = search_mod.measure
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StageError("fine-tuning diverged: the quantized model has non-finite weights")
        return real(*args, **kwargs)

    monkeypatch.setattr(search_mod, "measure", flaky)
    res = search(lenet5_trained, _cfg(final_points=0), tiny, seed=0, storage=tmp_path / "s.db")
    assert res.counts == {"COMPLETE": 2, "FAIL": 1}
    assert [r.state for r in res.trials] == ["COMPLETE", "FAIL", "COMPLETE"]


def test_a_trial_left_running_by_a_killed_search_is_failed_on_resume(lenet5_trained, tiny, tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    search(lenet5_trained, _cfg(trials=1, final_points=0, heartbeat_s=1), tiny, seed=0, storage=db)
    storage = open_storage(f"sqlite:///{db}", heartbeat_s=1)
    study = optuna.load_study(study_name="search", storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna: heartbeats are meant for optimize(); here we fake one
        killed = study.ask()  # what a killed process leaves: a RUNNING trial whose heartbeat stopped
    storage.record_heartbeat(killed._trial_id)
    # The beat stopped ten seconds ago (grace: three beats). Back-dated in the database rather than slept for:
    # SQLite's CURRENT_TIMESTAMP has one-second resolution, so a sleep just over the grace period can read as
    # exactly the grace period and leave the trial RUNNING.
    with sqlite3.connect(db) as con:
        assert con.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-10 seconds') WHERE trial_id = ?",
                           (killed._trial_id,)).rowcount == 1
    res = search(lenet5_trained, _cfg(trials=3, final_points=0, heartbeat_s=1), tiny, seed=0, storage=db)
    assert [r.state for r in res.trials] == ["COMPLETE", "FAIL", "COMPLETE"]  # one trial lost, budget kept


def test_two_local_workers_share_the_study(lenet5_trained, tiny, tmp_path: Path) -> None:
    res = search(lenet5_trained, _cfg(trials=4, workers=2, final_points=0), tiny, seed=0, storage=tmp_path / "w.db")
    assert res.counts.get("COMPLETE", 0) >= 4 and sum(res.counts.values()) <= 5  # at most one trial over on a race
    assert len({r.metrics["pid"] for r in res.trials}) == 2
    assert {r.metrics["threads"] for r in res.trials} == {1}


def test_a_trial_told_twice_by_two_workers_is_dropped_not_fatal(tmp_path: Path, monkeypatch) -> None:
    """Two workers can pop the same enqueued trial from SQLite; the second tell fails in Optuna and the worker
    goes on (any other ValueError still stops it)."""
    from crosslayer.explore import search_study

    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="s", storage=open_storage(url, 10), directions=["maximize"])
    real = optuna.study.Study.optimize
    calls = {"n": 0}

    def once_told_twice(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("Cannot tell a COMPLETE trial.")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.study.Study, "optimize", once_told_twice)
    ran = search_study._worker_loop(url, "s", lambda t: t.suggest_float("x", 0, 1), 2,
                                    lambda done: optuna.samplers.RandomSampler(seed=0), 10, (), None, None)
    assert ran == 2 and calls["n"] == 3
    assert [t.state.name for t in optuna.load_study(study_name="s", storage=url).trials] == ["COMPLETE"] * 2

    def other_error(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("something else")

    monkeypatch.setattr(optuna.study.Study, "optimize", other_error)
    with pytest.raises(ValueError, match="something else"):
        search_study._worker_loop(url, "s", lambda t: t.suggest_float("x", 0, 1), 3,
                                  lambda done: optuna.samplers.RandomSampler(seed=0), 10, (), None, None)

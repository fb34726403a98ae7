"""The study behind the search, on Optuna (Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization
Framework", KDD 2019): storage, samplers, the trial budget, local parallel workers and resuming.

- **Storage**: an SQLAlchemy URL that Optuna's :class:`optuna.storages.RDBStorage` opens: a local SQLite file by
  default (embedded, nothing to start) or a PostgreSQL server (``postgresql://user:password@host/db``) that
  several machines share. Trials record a heartbeat, so a trial whose process was killed is marked ``FAIL``
  once its heartbeat is older than the grace period (:func:`optuna.storages.fail_stale_trials`, called before
  every new trial): a killed search loses at most the trials that were running.
- **Budget**: a study holds at most ``n_trials`` trials in any state (complete, failed, running); a resumed
  or shared study runs only the trials still missing.
- **Workers**: ``workers > 1`` forks that many processes on this machine, each pinned to one torch thread (and
  one CPU where the platform allows), each with its own storage connection and a sampler seeded for it.
- **Samplers**: multi-objective TPE (Ozaki et al., GECCO 2022; multivariate, constant liar for parallel
  workers), NSGA-II (Deb et al., IEEE TEC 2002), random, and the grid of the existing sweep.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from crosslayer.errors import ConfigError, StageError

__all__ = ["FINISHED", "SAMPLERS", "make_sampler", "open_storage", "open_study", "quiet_optuna", "redact",
           "run_trials", "study_counts"]

log = logging.getLogger(__name__)
SAMPLERS = ("tpe", "nsga2", "random", "grid")
FINISHED = ("COMPLETE", "FAIL", "PRUNED")
Objective = Callable[[Any], Any]


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a dependency
        raise ConfigError("the search needs Optuna: pip install optuna") from exc
    return optuna


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for reports and logs)."""
    return re.sub(r"(//[^/:@]+:)[^@/]*@", r"\1***@", url)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own per-trial log lines off (the search reports progress itself); warnings stay."""
    optuna = _optuna()
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


def open_storage(url: str, heartbeat_s: int = 10) -> Any:
    """An Optuna RDB storage for ``url`` (SQLite file, PostgreSQL, ...) with trial heartbeats every
    ``heartbeat_s`` seconds and a grace period of three beats."""
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise ConfigError(f"storage {redact(url)!r} is not a database URL; use sqlite:///path/study.db or "
                          "postgresql://user:password@host:port/database")
    key = (url, heartbeat_s, os.getpid())
    if key in _STORAGES:
        return _STORAGES[key]
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        kwargs = {"creator": _sqlite_creator(url.removeprefix("sqlite:///"))}
    elif url.startswith("postgresql"):
        kwargs = {"pool_pre_ping": True}
    try:
        storage = _rdb_storage(url, kwargs, heartbeat_s)
    except ImportError as exc:
        raise ConfigError(f"storage {redact(url)!r} needs a database driver that is not installed ({exc}); "
                          "for PostgreSQL: pip install 'psycopg[binary]'") from exc
    except Exception as exc:  # SQLAlchemy's OperationalError and friends: a server down, a bad path, a bad login
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open the study storage {redact(url)!r}: {first}") from exc
    _STORAGES[key] = storage
    return storage


_STORAGES: dict[tuple[str, int, int], Any] = {}


def _rdb_storage(url: str, kwargs: dict[str, Any], heartbeat_s: int, attempts: int = 6) -> Any:
    """Optuna's RDB storage; on a fresh database, processes that start together race to create its tables (one
    of them meets a duplicate-key error), so such an error is retried after a short wait."""
    import sqlalchemy.exc

    optuna = _optuna()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s,
                                                  grace_period=3 * heartbeat_s)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1) * (1 + os.getpid() % 5))
    raise AssertionError("unreachable")


def _sqlite_creator(path: str) -> Callable[[], Any]:
    """Connections to a SQLite study file in write-ahead-log mode with ``synchronous = NORMAL``: a commit is
    not an fsync (several times faster trials), readers do not block the writer, and a killed process loses no
    committed trial (only a power cut can lose the last ones). Local disks only; share over a network with a
    database server."""
    import sqlite3

    def connect() -> Any:
        conn = sqlite3.connect(path, timeout=120, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    return connect


def make_sampler(name: str, seed: int, *, grid: Mapping[str, list[Any]] | None = None, startup_trials: int = 10,
                 population: int = 20) -> Any:
    """A seeded Optuna sampler by name (see :data:`SAMPLERS`); constraints reach TPE and NSGA-II through the
    trials' own ``set_constraint`` values."""
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup_trials,
                                              constant_liar=True)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            if not grid:
                raise ConfigError("the grid sampler needs a grid search space")
            return optuna.samplers.GridSampler(dict(grid), seed=seed)
    raise ConfigError(f"sampler {name!r} is unknown; allowed: {', '.join(SAMPLERS)}")


def open_study(storage: Any, name: str, directions: list[str], meta: Mapping[str, Any], sampler: Any = None) -> Any:
    """Create study ``name`` or load it; a study made for another model, space or objectives is refused
    (``meta`` is stored with it and compared)."""
    optuna = _optuna()
    try:
        with quiet_optuna():
            study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                        load_if_exists=True)
    except ValueError as exc:
        raise ConfigError(f"study {name!r}: {exc}") from exc
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study {name!r} optimises {[d.name.lower() for d in study.directions]}, not "
                          f"{directions}; choose another --study name")
    stored = study.user_attrs.get("crosslayer")
    if stored is None:
        study.set_user_attr("crosslayer", dict(meta))
    else:
        differ = sorted(k for k in set(stored) | set(meta) if stored.get(k) != meta.get(k))
        if differ:
            raise ConfigError(f"study {name!r} was made for another search ({', '.join(differ)} differ); choose "
                              "another --study name or storage, or run it with the same model and settings")
    return study


def study_counts(study: Any) -> dict[str, int]:
    """Trials per state name (``COMPLETE``, ``FAIL``, ``RUNNING``, ...)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _fail_stale(study: Any) -> None:
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _worker_loop(url: str, study_name: str, objective: Objective, n_trials: int, sampler_for: Callable[[int], Any],
                 heartbeat_s: int, catch: tuple[type[BaseException], ...], parent: int | None,
                 on_trial: Callable[[Any], None] | None) -> int:
    """Run trials of the study until it holds ``n_trials``; returns how many this loop ran."""
    optuna = _optuna()
    storage = open_storage(url, heartbeat_s)
    study = optuna.load_study(study_name=study_name, storage=storage)
    _fail_stale(study)
    study.sampler = sampler_for(len(study.get_trials(deepcopy=False)))
    ran = 0
    while parent is None or os.getppid() == parent:
        _fail_stale(study)
        states = ("COMPLETE", "FAIL", "PRUNED", "RUNNING")
        if sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in states) >= n_trials:
            break
        try:
            study.optimize(objective, n_trials=1, catch=catch)
        except ValueError as exc:  # two workers popped the same enqueued trial (SQLite has no row locks)
            if not str(exc).startswith("Cannot tell a"):
                raise
            log.warning("a trial was run by two workers at once; this worker's duplicate result is dropped (%s)", exc)
            continue
        ran += 1
        if on_trial is not None:
            on_trial(study.trials[-1])
    return ran


def _worker_main(index: int, url: str, study_name: str, objective: Objective, n_trials: int,
                 sampler_for: Callable[[int, int], Any], heartbeat_s: int, catch: tuple[type[BaseException], ...],
                 parent: int) -> None:
    import torch

    torch.set_num_threads(1)
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    try:
        with quiet_optuna():
            _worker_loop(url, study_name, objective, n_trials, lambda done: sampler_for(index, done), heartbeat_s,
                         catch, parent, None)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def run_trials(url: str, study_name: str, objective: Objective, n_trials: int, *,
               sampler_for: Callable[[int, int], Any], workers: int = 1, heartbeat_s: int = 10,
               catch: tuple[type[BaseException], ...] = (), on_trial: Callable[[Any], None] | None = None) -> None:
    """Run the study's missing trials: in this process (``workers == 1``) or in ``workers`` forked processes.

    ``sampler_for(worker, trials_already_in_study)`` gives each worker its sampler (seeded per worker and per
    resumption, so a resumed study does not replay its first proposals). Exceptions in ``catch`` raised by the
    objective mark the trial ``FAIL`` and the search goes on.
    """
    if workers == 1:
        with quiet_optuna():
            _worker_loop(url, study_name, objective, n_trials, lambda done: sampler_for(0, done), heartbeat_s,
                         catch, None, on_trial)
        return
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError("workers > 1 needs the fork start method (Linux, macOS); run one worker per process "
                          "instead: start `crosslayer search` several times on the same --storage and --study")
    ctx = multiprocessing.get_context("fork")
    parent = os.getpid()
    procs = [ctx.Process(target=_worker_main, args=(i, url, study_name, objective, n_trials, sampler_for,
                                                    heartbeat_s, catch, parent), daemon=False)
             for i in range(workers)]
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise StageError(f"search worker(s) {', '.join(map(str, failed))} stopped with an error (exit codes "
                         f"{[procs[i].exitcode for i in failed]}); see the messages above")

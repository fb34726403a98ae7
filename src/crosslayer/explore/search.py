"""``search``: the hardware-aware co-design search, the cross-layer decision made jointly rather than step by step.

The survey's flow (Fig. 3) prunes, then quantizes, then chooses approximations, then a dataflow; its open
challenges (Sec. VI: hardware/software co-design, hardware-aware hyper-parameter tuning) ask for the decisions
to be made together with the hardware's energy and latency in the loop, as HAQ (Wang et al., CVPR 2019), AMC
(He et al., ECCV 2018) and HyperPower (Stamoulis et al., DATE 2018) do. Here an Optuna study (multi-objective
TPE or NSGA-II, seeded) chooses per layer the pruning ratio, weight and activation widths and approximate
multiplier, optionally per channel group the channels kept (structured pruning, as AMC), and for the network
the dataflow (and optionally in-memory execution or the weight memory's supply voltage: issue 19's energy in
the loop, the design read through one seeded chip's faults at that voltage, as in MATIC, Kim et al., DATE
2018, and its weight buffer priced there by :mod:`crosslayer.hw.voltage`).

Protocol: a trial is scored on the validation split only (a fixed subset, a short quantization-aware
fine-tune); the Pareto set is then fine-tuned in full, scored on the whole validation split, which chooses the
reported point, and measured once on the test split. The test split chooses nothing.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crosslayer.checkpoint import state_digest
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, CrossLayerError, StageError
from crosslayer.explore.pareto import pareto_front
from crosslayer.explore.search_config import OBJECTIVES, SearchConfig
from crosslayer.explore.search_eval import (
    FineTune,
    HardwareTarget,
    Measured,
    MemoryTarget,
    build_design,
    hardware_cost,
    measure,
)
from crosslayer.explore.search_space import EXECUTIONS, MIN_DATAFLOWS, Design, SearchSpace
from crosslayer.explore.search_study import make_sampler, open_storage, open_study, redact, run_trials, study_counts
from crosslayer.hw import load_accelerator
from crosslayer.hw.voltage import SramVoltageModel
from crosslayer.imc import CrossbarSpec
from crosslayer.prune import prunable_groups
from crosslayer.train import evaluate, progress

__all__ = ["FinalPoint", "SearchConfig", "SearchResult", "TrialRecord", "build_space", "memory_target", "search",
           "trial_records"]

log = logging.getLogger(__name__)
_CATCH: tuple[type[BaseException], ...] = (CrossLayerError, RuntimeError, ValueError, ArithmeticError)


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study: its state, parameters, design and measured figures (validation split)."""

    number: int
    state: str
    params: dict[str, Any]
    design: Design | None
    metrics: dict[str, Any]
    feasible: bool = True


@dataclass(frozen=True)
class FinalPoint:
    """A Pareto trial fine-tuned in full: figures on the whole validation split and, measured once, the test split."""

    trial: int
    design: Design
    val: Measured
    test: Measured
    val_loss_pp: float
    test_loss_pp: float


@dataclass
class SearchResult:
    """What a search found. ``chosen`` is the reported point (the cheapest final point within the budget on
    validation); ``model`` its quantized model (exact multipliers; ``assignment`` names its multipliers)."""

    config: SearchConfig
    study: str
    storage: str
    space: SearchSpace
    baseline: dict[str, float]
    trials: list[TrialRecord]
    pareto: list[int]
    final: list[FinalPoint] = field(default_factory=list)
    chosen: FinalPoint | None = None
    model: nn.Module | None = None
    assignment: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _dataflows(cfg: SearchConfig, supported: tuple[str, ...]) -> tuple[str, ...]:
    if cfg.dataflows:
        bad = [d for d in cfg.dataflows if d not in MIN_DATAFLOWS and d not in supported]
        if bad:
            raise ConfigError(f"dataflows {bad} are not offered by accelerator {cfg.accelerator!r}; allowed: "
                              f"{', '.join((*MIN_DATAFLOWS, *supported))}")
        return tuple(cfg.dataflows)
    return ("min-energy", "min-latency", *supported) if "latency" in cfg.objectives else ("min-energy",)


def build_space(model: nn.Module, cfg: SearchConfig, supported_dataflows: tuple[str, ...],
                notes: list[str] | None = None, example_input: torch.Tensor | None = None) -> SearchSpace:
    """The search space of ``model`` under ``cfg`` (layerwise, or the grid for ``sampler = "grid"``).
    ``example_input`` (a batch of one input) traces the channel groups; needed when ``cfg.max_channel_cut`` > 0."""
    notes = notes if notes is not None else []
    voltages = tuple(float(v) for v in cfg.memory_voltages)
    if cfg.sampler == "grid":
        return SearchSpace.grid(model, cfg.grid_schemes, cfg.grid_sparsities, cfg.grid_bits, cfg.grid_act_bits,
                                memory_voltages=voltages)
    groups = _channel_groups(model, cfg, example_input, notes)
    space = SearchSpace.for_model(model, max_sparsity=cfg.max_sparsity,
                                  weight_bits=tuple(cfg.weight_bits), act_bits=tuple(cfg.act_bits),
                                  multipliers=tuple(cfg.multipliers), dataflows=_dataflows(cfg, supported_dataflows),
                                  memory_voltages=voltages, channel_groups=groups,
                                  max_channel_cut=cfg.max_channel_cut if groups else 0.0)
    for n, why in space.exact_only.items():
        notes.append(f"layer {n} keeps the exact multiplier: {why}")
    if cfg.imc:
        if space.exact_only:
            notes.append("in-memory execution is not offered: crossbars take ungrouped, zero-padded layers only")
        else:
            space = SearchSpace(**{**space.__dict__, "executions": EXECUTIONS})
    return space


def _channel_groups(model: nn.Module, cfg: SearchConfig, example_input: torch.Tensor | None,
                    notes: list[str]) -> tuple[str, ...]:
    """The keys of ``model``'s prunable channel groups when ``cfg`` searches channel cuts (else none); a model
    without one gets a note and a space without channel choices."""
    if cfg.max_channel_cut == 0.0 or cfg.sampler == "grid":
        return ()
    if example_input is None:
        raise ConfigError("max_channel_cut > 0 needs an example input to trace the model's channel groups")
    try:
        groups = prunable_groups(copy.deepcopy(model).eval(), example_input)
    except StageError as exc:
        notes.append(f"channel pruning is not offered: {exc}")
        return ()
    return tuple(g.key for g in groups)


def memory_target(cfg: SearchConfig) -> MemoryTarget | None:
    """The voltage-scaled weight memory of ``cfg`` (None when ``memory_voltages`` is empty): its curve, the
    chip drawn down to the lowest voltage offered, and the SRAM energy model at the curve's nominal voltage."""
    if not cfg.memory_voltages:
        return None
    curve = cfg.memory_curve_model()
    energy = SramVoltageModel(nominal_v=curve.nominal_v, leakage_share=cfg.memory_leakage_share)
    return MemoryTarget(curve, cfg.memory_chip_seed, min(cfg.memory_voltages), energy, cfg.memory_buffer,
                        cfg.memory_adapt, cfg.memory_adapt_lr)


def _subset(ds: Any, n: int) -> Any:
    return ds.subset(n) if n and n < len(ds) else ds


def trial_records(study: Any, cfg: SearchConfig) -> list[TrialRecord]:
    """Every trial of ``study`` with its design and figures (the design as the trial stored it)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        design = Design.from_json(t.user_attrs["design"]) if "design" in t.user_attrs else None
        metrics = {k: v for k, v in t.user_attrs.items() if k not in ("design", "constraints")}
        feasible = all(c <= 0 for c in t.user_attrs.get("constraints", []))
        out.append(TrialRecord(t.number, t.state.name, dict(t.params), design, metrics, feasible))
    return out


def _pareto(records: list[TrialRecord], cfg: SearchConfig) -> list[int]:
    done = [r for r in records if r.state == "COMPLETE" and r.feasible]
    if not done:
        return []
    values = [[float(r.metrics[o]) for o in cfg.objectives] for r in done]
    return [done[i].number for i in pareto_front(values, [OBJECTIVES[o] == "maximize" for o in cfg.objectives])]


def _final_candidates(records: list[TrialRecord], pareto: list[int], cfg: SearchConfig) -> list[TrialRecord]:
    """Pareto trials within the budget plus slack (trial accuracy), cheapest first, thinned evenly to at most
    ``final_points``; chosen on validation figures only."""
    by_number = {r.number: r for r in records}
    pts = [by_number[n] for n in pareto if by_number[n].metrics["loss_pp"] <= cfg.budget_pp + cfg.final_slack_pp]
    pts.sort(key=lambda r: (float(r.metrics[cfg.cost_objective]), -float(r.metrics["accuracy"])))
    k = cfg.final_points
    if len(pts) <= k:
        return pts
    idx = sorted({round(i * (len(pts) - 1) / max(1, k - 1)) for i in range(k)})
    return [pts[i] for i in idx]


def search(model: nn.Module, config: SearchConfig, data: DataSplits, *, seed: int = 0,
           storage: str | Path | None = None, crossbar: CrossbarSpec | None = None) -> SearchResult:
    """Run (or resume) the co-design search on ``model`` (not modified) and finish its Pareto set.

    ``storage`` is a database URL or a path to a SQLite file (default ``config.storage``, else a temporary file
    removed afterwards). See the module docstring for the protocol and :class:`SearchConfig` for the options.
    """
    t0 = time.perf_counter()
    notes: list[str] = []
    acc = load_accelerator(config.accelerator)
    space = build_space(model, config, acc.dataflows, notes, example_input=data.train.images[:1])
    n_trials = config.trials
    if space.mode == "grid":
        size = space.grid_size
        if n_trials > size:
            notes.append(f"the grid has {size} points: {n_trials} trials capped to {size}")
            n_trials = size
    model = copy.deepcopy(model).eval()  # the caller's model stays as it was (mode included)
    trial_data = DataSplits(_subset(data.train, config.trial_train_limit), _subset(data.val, config.trial_val_limit),
                            _subset(data.val, config.trial_val_limit))  # the test split has no place in a trial
    memory = memory_target(config)
    hw = HardwareTarget(acc, data.val.images[:config.hw_samples], skip=config.skip,
                        crossbar=crossbar if crossbar is not None else CrossbarSpec(), memory=memory)
    base_trial_acc = evaluate(model, trial_data.val).accuracy
    finetune = FineTune(config.trial_epochs, config.lr, config.batch_size)
    objectives = list(config.objectives)

    def objective(trial: Any) -> list[float]:
        t = time.perf_counter()
        design = space.suggest(trial)
        trial.set_user_attr("design", design.to_json())
        built = build_design(model, design, trial_data, finetune, seed=seed, crossbar=hw.crossbar, memory=memory)
        m = measure(built, trial_data.val, hw)
        loss_pp = 100.0 * (base_trial_acc - m.accuracy)
        if memory is not None and design.memory_voltage is not None:
            v = design.memory_voltage
            trial.set_user_attr("memory_voltage", v)
            trial.set_user_attr("memory_ber", memory.curve.ber(v))
            trial.set_user_attr("memory_faulty_bits", sum(c.fault_count(v) for c in built.chips.values()))
            trial.set_user_attr("weight_memory_energy_ratio", memory.energy.access_energy_ratio(v))
        for k, v in {**m.to_json(), "loss_pp": loss_pp, "seconds": time.perf_counter() - t, "pid": os.getpid(),
                     "threads": torch.get_num_threads(), "exact_kept": sorted(built.exact_kept)}.items():
            trial.set_user_attr(k, v)
        caps = {"loss_pp": (loss_pp, config.max_loss_pp), "energy": (m.energy, config.max_energy),
                "latency_ms": (m.latency_ms, config.max_latency_ms)}
        excess = [v - cap for v, cap in caps.values() if cap]
        trial.set_user_attr("constraints", excess)
        for key, (v, cap) in caps.items():
            if cap:
                trial.set_constraint(key, v - cap)  # the samplers prefer feasible trials
        return [m.objective(o) for o in objectives]

    def sampler_for(worker: int, done: int) -> Any:
        s = seed * 1_000_003 + worker * 7_919 + done  # per worker, per resumption: no replayed proposals
        return make_sampler(config.sampler, s, grid=space.grid_search_space() if space.mode == "grid" else None,
                            startup_trials=config.startup_trials, population=config.population)

    meta = {"space": space.digest(), "model": state_digest(model), "objectives": objectives, "seed": seed,
            "trial": [config.trial_epochs, config.trial_train_limit, config.trial_val_limit, config.lr,
                      config.batch_size], "hardware": [config.accelerator, config.skip, config.hw_samples],
            "sampler": config.sampler}
    if memory is not None:  # absent without the knob: a study made before it still opens
        meta["memory"] = [config.memory_curve, memory.curve.nominal_v, config.memory_chip_seed, config.memory_adapt,
                          config.memory_adapt_lr, config.memory_leakage_share, config.memory_buffer]
    if config.warm_start:  # likewise
        meta["warm_start"] = [list(d) for d in config.warm_start]
    with tempfile.TemporaryDirectory(prefix="crosslayer-search-") as tmp:
        url = _storage_url(storage if storage is not None else config.storage, Path(tmp))
        st = open_storage(url, config.heartbeat_s)
        study = open_study(st, config.study, config.directions, meta, sampler=None)
        if "space" not in study.user_attrs:
            study.set_user_attr("space", space.describe())
        before = len(study.get_trials(deepcopy=False))
        if not before:
            for design in config.warm_start[:n_trials]:   # anchors first (they count towards the trials)
                study.enqueue_trial(space.uniform_params(*design))
        st.engine.dispose()  # no connection crosses a fork
        threads_before = torch.get_num_threads()
        if config.workers == 1 and config.threads:
            torch.set_num_threads(config.threads)
        try:
            with progress() as bar:
                task = bar.add_task("search", total=n_trials, completed=min(before, n_trials), info="")
                run_trials(url, config.study, objective, n_trials, sampler_for=sampler_for, workers=config.workers,
                           heartbeat_s=config.heartbeat_s, catch=_CATCH,
                           on_trial=lambda t: bar.update(task, advance=1, info=f"trial {t.number} {t.state.name}"))
            study = open_study(open_storage(url, config.heartbeat_s), config.study, config.directions, meta)
            records = trial_records(study, config)
            counts = study_counts(study)
        finally:
            torch.set_num_threads(threads_before)
    if before:
        notes.append(f"resumed study {config.study!r}: {before} trial(s) were already stored")
    pareto = _pareto(records, config)
    where = redact(url) if str(storage if storage is not None else config.storage) else "temporary SQLite file"
    result = SearchResult(config, config.study, where, space, {}, records, pareto, notes=notes, counts=counts)
    result.baseline = _baseline_figures(model, data, hw, base_trial_acc)
    _finish(result, model, data, hw, seed)
    result.seconds = time.perf_counter() - t0
    return result


def _storage_url(storage: str | Path, tmp: Path) -> str:
    text = str(storage)
    if not text:
        return f"sqlite:///{(tmp / 'study.db').resolve()}"
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        raise ConfigError(f"storage {text!r} is a folder; give a database URL or a file such as study.db")
    return f"sqlite:///{path}"


def _baseline_figures(model: nn.Module, data: DataSplits, hw: HardwareTarget, trial_acc: float) -> dict[str, float]:
    """The unmodified model: accuracies, and energy / latency on the accelerator at its own precision."""
    from crosslayer.quant.storage import quantized_storage

    energy, latency = hardware_cost(model, {}, "min-energy", hw)
    return {"trial_val_accuracy": trial_acc, "val_accuracy": evaluate(model, data.val).accuracy,
            "test_accuracy": evaluate(model, data.test).accuracy, "energy": energy, "latency_ms": latency,
            "size_bytes": quantized_storage(model).bits / 8}


def _finish(result: SearchResult, model: nn.Module, data: DataSplits, hw: HardwareTarget, seed: int) -> None:
    """Fine-tune the chosen Pareto trials in full, score them on validation, measure them once on test."""
    cfg = result.config
    cands = _final_candidates(result.trials, result.pareto, cfg)
    if cfg.final_points and not cands:
        result.notes.append(f"no Pareto trial within {cfg.budget_pp + cfg.final_slack_pp:g} pp of the baseline: "
                            "nothing to fine-tune in full")
    full = DataSplits(_subset(data.train, cfg.final_train_limit), data.val, data.val)
    ft = FineTune(cfg.final_epochs, cfg.lr, cfg.batch_size)
    base_val, base_test = result.baseline["val_accuracy"], result.baseline["test_accuracy"]
    built_by: dict[int, Any] = {}
    with progress() as bar:
        task = bar.add_task("final fine-tuning", total=len(cands), info="")
        for rec in cands:
            assert rec.design is not None
            try:
                built = build_design(model, rec.design, full, ft, seed=seed, crossbar=hw.crossbar, memory=hw.memory)
            except StageError as exc:
                result.notes.append(f"trial {rec.number}: full fine-tuning failed ({exc})")
                continue
            v, t = measure(built, data.val, hw), measure(built, data.test, hw)
            result.final.append(FinalPoint(rec.number, rec.design, v, t, 100 * (base_val - v.accuracy),
                                           100 * (base_test - t.accuracy)))
            built_by[rec.number] = built
            bar.update(task, advance=1, info=f"trial {rec.number}: val {v.accuracy:.4f}")
    within = [p for p in result.final if p.val_loss_pp <= cfg.budget_pp + 1e-9]
    if within:
        result.chosen = min(within, key=lambda p: (p.val.objective(cfg.cost_objective), -p.val.accuracy))
    elif result.final:
        result.chosen = max(result.final, key=lambda p: p.val.accuracy)
        result.notes.append(f"no finished point is within {cfg.budget_pp:g} pp on validation: reported the most "
                            "accurate one")
    if result.chosen is not None:
        built = built_by[result.chosen.trial]
        result.model = built.quantized
        result.assignment = dict(built.assignment)

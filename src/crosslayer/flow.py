"""The flow: a list of stages read from TOML, run in order over one run directory.

Stages are registered in the stage kernel (:mod:`crosslayer.stage`) next to their technique and
discovered there; this module names none of them. It reads and validates a flow's TOML, builds the
context (data, model, device), and runs the stages, writing the run directory
(:mod:`crosslayer.rundir`) as it goes: a run directory that already holds the same run is resumed after
its last finished stage, one holding another run is refused unless ``force``.

Running one step outside a flow (the CLI commands) is the same thing with one stage: a flow whose
``source_run`` is the run directory the model comes from (:func:`run_standalone`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from torch import nn

from crosslayer.checkpoint import CheckpointError
from crosslayer.config import from_mapping, load_toml, to_mapping
from crosslayer.data import load_splits
from crosslayer.device import resolve_device
from crosslayer.errors import ConfigError, CrossLayerError, ModelError, StageError
from crosslayer.fileio import atomic_write_json, atomic_write_text, check_creatable_dir
from crosslayer.report import Report, write_html
from crosslayer.rundir import ModelSpec, RunDir, StageRecord, check_name, load_run_model, read_json
from crosslayer.stage import (
    ARTIFACTS,
    FlowConfig,
    StageContext,
    StageResult,
    StageSpec,
    available_stages,
    register_stage,
)

__all__ = ["FlowConfig", "ResolvedFlow", "StageContext", "StageResult", "StageSpec", "available_stages",
           "build_context", "default_flow_path", "load_flow_config", "load_run_model", "register_stage",
           "render_report", "run_flow", "run_standalone", "standalone_flow"]

log = logging.getLogger(__name__)


def default_flow_path() -> Path:
    return Path(__file__).parent / "flows" / "default.toml"


@dataclass(frozen=True)
class ResolvedFlow:
    """A validated flow: the ``[flow]`` section and one config per stage it runs."""

    flow: FlowConfig
    stage_configs: dict[str, Any]

    def to_toml(self) -> str:
        doc: dict[str, Any] = {"flow": to_mapping(self.flow)}
        for name, cfg in self.stage_configs.items():
            doc[name] = to_mapping(cfg)
        return tomli_w.dumps(_drop_none(doc))


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


def check_stage_order(flow: FlowConfig, stages: Mapping[str, StageSpec]) -> None:
    """Refuse a stage list that cannot make sense: a stage that works on a trained model placed before the
    stage that trains or loads it, or no such stage at all (and no weights or source run given)."""
    if flow.weights or flow.source_run:
        return
    providers = [s for s in flow.stages if stages[s].provides_model]
    for i, name in enumerate(flow.stages):
        if not stages[name].needs_model:
            continue
        if not providers:
            raise ConfigError(f"stage {name!r} works on a trained model, but no stage trains or loads one: add "
                              "'baseline' first to flow.stages (or give flow.weights / flow.source_run)")
        if flow.stages.index(providers[0]) > i:
            raise ConfigError(f"stage {name!r} comes before {providers[0]!r} in flow.stages, so it would run on an "
                              f"untrained model; order: {', '.join(flow.stages)}")


def load_flow_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> ResolvedFlow:
    """Read a flow TOML (the built-in default when ``path`` is None), apply ``[flow]`` overrides, validate."""
    doc = load_toml(path or default_flow_path(), "flow config")
    flow_raw = doc.pop("flow", {})
    if not isinstance(flow_raw, Mapping):
        raise ConfigError("[flow] must be a table")
    flow_raw = dict(flow_raw)
    flow_raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    flow = from_mapping(FlowConfig, flow_raw, section="flow")
    stages = available_stages()
    unknown = [s for s in flow.stages if s not in stages]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(map(repr, unknown))} in flow.stages; "
                          f"allowed: {', '.join(sorted(stages))}")
    stray = [k for k in doc if k not in stages]
    if stray:
        raise ConfigError(f"unknown section(s) {', '.join(f'[{k}]' for k in stray)}; "
                          f"allowed: [flow] and one per stage: {', '.join(sorted(stages))}")
    for name, section in doc.items():
        if not isinstance(section, Mapping):
            raise ConfigError(f"[{name}] must be a table, got {section!r}")
    check_stage_order(flow, stages)
    cfgs: dict[str, Any] = {name: from_mapping(stages[name].config_cls, doc.get(name), section=name)
                            for name in flow.stages}
    for name in doc:  # a section of a stage that is not run is still checked, so a typo never passes silently
        if name not in cfgs:
            from_mapping(stages[name].config_cls, doc[name], section=name)
            if path is not None and "stages" not in (overrides or {}):
                log.warning("section [%s] is configured but %r is not in flow.stages; it is not run",
                            name, name)
    return ResolvedFlow(flow, cfgs)


# ----- context -------------------------------------------------------------------------------------

def _model_spec(flow: FlowConfig, ctx_shape: tuple[int, int, int], num_classes: int) -> ModelSpec:
    c, h, _ = ctx_shape
    return ModelSpec(flow.model, num_classes, c, h)


def build_context(run_dir: Path | None, flow: FlowConfig) -> StageContext:
    """Data, model (built and loaded, or taken from ``flow.source_run``) and device of a run (``run_dir``
    None: a context that writes no files)."""
    from crosslayer.models import build_model, load_weights, normalize_inputs
    from crosslayer.models.registry import check_model_name, check_weights_file
    from crosslayer.train import seed_everything

    # what can be checked without the data is checked first: an offline typo is not reported as a download error
    device = resolve_device(flow.device)
    if not flow.source_run:
        check_model_name(flow.model)
        for w in (flow.init_weights, flow.weights):
            if w:
                check_weights_file(w)
    data = load_splits(flow.dataset, flow.data_dir or None, val_fraction=flow.val_fraction, seed=flow.seed,
                       train_limit=flow.train_limit or None, test_limit=flow.test_limit or None,
                       resize=flow.resize or None, channels=flow.channels or None)
    seed_everything(flow.seed)
    spec = _model_spec(flow, data.input_shape, data.num_classes)
    models: dict[str, nn.Module] = {}
    artifacts: dict[str, Any] = {}
    if flow.source_run:
        src = RunDir(flow.source_run)
        src_spec = src.model_spec()
        if (src_spec.num_classes, src_spec.in_channels, src_spec.image_size) != (
                spec.num_classes, spec.in_channels, spec.image_size):
            raise ConfigError(f"source run {flow.source_run!r} was made for {src_spec.in_channels}x"
                              f"{src_spec.image_size}px inputs and {src_spec.num_classes} classes; dataset "
                              f"{flow.dataset!r} has {spec.in_channels}x{spec.image_size}px and {spec.num_classes}")
        trusted = flow.model if spec.is_user_code else None
        try:
            model = src.load_model(src.model_of(flow.source_stage or None), trusted_model=trusted)
            for rec in src.done():
                for pub, ckpt in rec.published.items():
                    models[pub] = src.load_model(ckpt, trusted_model=trusted).to(device)
                artifacts.update(_load_artifacts(src, rec))
        except CheckpointError as exc:
            raise ModelError(f"source run {flow.source_run!r}: {exc}") from exc
    else:
        model = build_model(flow.model, num_classes=data.num_classes, in_channels=spec.in_channels,
                            image_size=spec.image_size)
        normalize_inputs(model, data.train)  # a model with a Normalize layer gets its training split's statistics
        for w in (flow.init_weights, flow.weights):
            if w:
                load_weights(model, w)
    ctx = StageContext(run_dir=run_dir, flow=flow, data=data, model=model.to(device), device=device,
                       seed=flow.seed, models=models, artifacts=artifacts)
    if flow.source_run:
        ctx.models.setdefault("baseline", ctx.model)
    return ctx


def _tensor_artifacts() -> set[str]:
    return {n for n, a in ARTIFACTS.items() if a.tensors}


def _load_artifacts(run: RunDir, rec: StageRecord) -> dict[str, Any]:
    values = run.load_artifacts(rec.stage, _tensor_artifacts())
    out: dict[str, Any] = {}
    for name in rec.artifacts:
        art = ARTIFACTS.get(name)
        if art is None or name not in values:
            raise StageError(f"run directory {str(run.path)!r}: artifact {name!r} of stage {rec.stage!r} is "
                             "unknown or missing")
        out[name] = art.check(values[name])
    return out


# ----- running -------------------------------------------------------------------------------------

def _write_outputs(run: RunDir, flow: FlowConfig, reports: list[Report], seconds: float,
                   resumed: list[str]) -> None:
    metrics: dict[str, Any] = {"flow": {"model": flow.model, "dataset": flow.dataset, "seed": flow.seed,
                                        "stages": list(flow.stages), "seconds": seconds, "resumed": resumed}}
    for r in reports:
        metrics[r.stage] = {**r.to_json()["metrics"], "seconds": r.seconds}
    atomic_write_json(run.metrics_path, metrics)
    atomic_write_json(run.path / "reports" / "index.json", {"stages": [r.stage for r in reports]})
    summary: dict[str, Any] = {"model": flow.model, "dataset": flow.dataset, "seed": flow.seed,
                               "stages": ", ".join(r.stage for r in reports), "total seconds": round(seconds, 1)}
    if flow.source_run:
        summary["model taken from"] = flow.source_run
    if resumed:
        summary["resumed"] = f"stages {', '.join(resumed)} were finished by an earlier, identical run and reused"
    atomic_write_json(run.path / "reports" / "summary.json", summary)
    render_report(run.path, reports, summary, title=f"crosslayer: {flow.model} on {flow.dataset}")


def render_report(run_dir: str | Path, reports: list[Report] | None = None, summary: Mapping[str, Any] | None = None,
                  title: str | None = None) -> Path:
    """Write ``RUN_DIR/report.html``: the flow at a glance (table and figure), then every stage's section.
    Without ``reports`` they are read back from the run directory (as data; every value escaped)."""
    from crosslayer.report import load_reports
    from crosslayer.viz.glance import glance_figure

    run = RunDir(run_dir)
    if reports is None:
        reports = load_reports(run.path)
    if summary is None and (run.path / "reports" / "summary.json").is_file():
        loaded = read_json(run.path / "reports" / "summary.json", "report summary")
        summary = loaded if isinstance(loaded, dict) else None
    glance = glance_figure(reports)
    return write_html(run.html_path, reports, title=title or f"crosslayer: {run.path.name}",
                      summary=dict(summary or {}), glance_figures=[glance] if glance is not None else [])


def _restore(run: RunDir, ctx: StageContext, done: list[StageRecord], stages: tuple[str, ...],
             trusted: str | None) -> list[Report]:
    """Reload what the first finished stages of an identical earlier run left; stop at the first that
    does not match the stage list or cannot be read back."""
    reports: list[Report] = []
    for i, rec in enumerate(done):
        if i >= len(stages) or rec.stage != stages[i]:
            break
        try:
            rep = Report.load(run.report_path(rec.stage))
            models = {pub: run.load_model(ckpt, trusted_model=trusted).to(ctx.device)
                      for pub, ckpt in rec.published.items()}
            current = (run.load_model(rec.model, trusted_model=trusted).to(ctx.device)
                       if rec.model is not None else None)
            artifacts = _load_artifacts(run, rec)
        except CrossLayerError as exc:
            log.warning("stage %s of the earlier run cannot be reused (%s); re-running from there", rec.stage, exc)
            break
        if current is not None:
            ctx.model = current
        ctx.models.update(models)
        ctx.artifacts.update(artifacts)
        ctx.reports[rec.stage] = rep
        reports.append(rep)
    run.truncate(len(reports))
    return reports


def _save_stage(run: RunDir, name: str, result: StageResult, base: nn.Module, rep: Report) -> StageRecord:
    """Write what a finished stage left (models as state dict + architecture record, artifacts)."""
    record = StageRecord(stage=name)
    saved: dict[int, str] = {}

    def save(model_name: str, model: nn.Module) -> str | None:
        if id(model) in saved:
            return saved[id(model)]
        try:
            run.save_model(model_name, model, base, stage=name)
        except CheckpointError as exc:
            rep.notes.append(f"model {model_name!r} is not kept in the run directory: {exc}")
            log.warning("stage %s: model %r not saved: %s", name, model_name, exc)
            return None
        saved[id(model)] = model_name
        return model_name

    for pub, model in result.publish.items():
        check_name(pub, "published model name")
        got = save(pub, model)
        if got is not None:
            record.published[pub] = got
    if result.model is not None:
        record.model = save(name, result.model)
    artifacts = result.checked_artifacts()
    record.artifacts = run.save_artifacts(name, artifacts, _tensor_artifacts()) if artifacts else []
    return record


def run_flow(resolved: ResolvedFlow, run_dir: str | Path, on_stage: Callable[[str, Report], None] | None = None,
             *, force: bool = False) -> list[Report]:
    """Run every stage of ``resolved`` in order, writing the run directory as it goes.

    A directory that already holds this exact run (same resolved config, same source run) is resumed
    after its last finished stage; one that holds another run is refused unless ``force``, which
    removes the older run's files first.
    """
    run = RunDir(run_dir)
    flow = resolved.flow
    fresh = not run.path.exists()
    stages = available_stages()
    config_text = resolved.to_toml()
    digest_text = config_text
    if flow.source_run:
        digest_text += "\n# source state\n" + hashlib.sha256(
            RunDir(flow.source_run).state_path.read_bytes()).hexdigest()
    check_creatable_dir(run.path)
    ctx = build_context(run.path, flow)  # model, weights and data are checked before anything is written
    spec = _model_spec(flow, ctx.data.input_shape, ctx.data.num_classes)
    try:
        done = run.start(digest_text, spec, force=force)
    except BaseException:
        if fresh and run.path.is_dir() and not any(run.path.iterdir()):
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    trusted = flow.model if spec.is_user_code else None
    reports = _restore(run, ctx, done, flow.stages, trusted) if done else []
    resumed = [r.stage for r in reports]
    if resumed:
        log.info("resuming %s after stage(s) %s", run.path, ", ".join(resumed))
    atomic_write_text(run.config_path, config_text)
    base = spec.build(trusted)
    t_start = time.perf_counter()
    for name in flow.stages[len(reports):]:
        spec_s, cfg = stages[name], resolved.stage_configs[name]
        log.info("stage %s", name)
        t0 = time.perf_counter()
        try:
            result = spec_s.fn(ctx, cfg)
        except CrossLayerError:
            raise
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise StageError(f"stage {name!r} ran out of memory: {exc}") from exc
            raise
        rep = result.report
        rep.stage, rep.seconds, rep.seed = name, time.perf_counter() - t0, flow.seed
        rep.config = to_mapping(cfg) if dataclasses.is_dataclass(cfg) else {}
        if flow.source_run:
            rep.notes.append(f"model taken from run directory {flow.source_run!r}"
                             + (f" (stage {flow.source_stage})" if flow.source_stage else ""))
        if result.model is not None:
            ctx.model = result.model
        ctx.models.update(result.publish)
        record = _save_stage(run, name, result, copy.deepcopy(base), rep)
        ctx.artifacts.update(result.checked_artifacts())
        ctx.reports[name] = rep
        rep.save(run.report_path(name))
        reports.append(rep)
        run.finish_stage(record)
        _write_outputs(run, flow, reports, time.perf_counter() - t_start, resumed)
        if on_stage is not None:
            on_stage(name, rep)
    if not flow.stages[len(resumed):]:
        _write_outputs(run, flow, reports, 0.0, resumed)
    return reports


# ----- one stage outside a flow --------------------------------------------------------------------

_FROM_SOURCE = ("model", "dataset", "val_fraction", "train_limit", "test_limit", "resize", "channels", "data_dir",
                "seed", "device")


def standalone_flow(stage: str, run_dir: str | Path | None, options: Mapping[str, Any],
                    source_stage: str | None = None) -> FlowConfig:
    """The flow settings for running ``stage`` alone: on the model of run directory ``run_dir`` (its data
    settings) or on ``options`` model + weights; ``options`` may override seed, device and data_dir, and
    must name the model when the run directory's model is a user factory."""
    opts = {k: v for k, v in options.items() if v is not None and v != ""}
    if run_dir is not None and opts.get("weights"):
        raise ConfigError("give either a RUN_DIR or --weights, not both")
    if run_dir is None:
        if not opts.get("weights"):
            raise ConfigError(f"nothing to run {stage} on: give a RUN_DIR written by `crosslayer flow` / "
                              "`crosslayer train`, or --model with --weights")
        return from_mapping(FlowConfig, {**opts, "stages": [stage]}, section="flow")
    src = RunDir(run_dir)
    src.state()  # a clear error for a directory that is not a run, or one of the older, pickled format
    raw = load_toml(src.config_path, "run config").get("flow", {})
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{str(src.config_path)!r}: [flow] must be a table")
    keep = {k: raw[k] for k in _FROM_SOURCE if k in raw}
    model = src.model_spec().model
    keep["model"] = model
    if ":" in model:
        if not opts.get("model"):
            raise ModelError(f"run directory {str(run_dir)!r} holds a model built by the user factory {model!r}, "
                             f"which is code; pass it yourself (--model {model}) to rebuild the model")
        keep["model"] = opts["model"]
    keep.update({k: opts[k] for k in ("seed", "device", "data_dir", "dataset") if k in opts})
    return from_mapping(FlowConfig, {**keep, "source_run": str(run_dir), "source_stage": source_stage or "",
                                     "stages": [stage]}, section="flow")


def run_standalone(stage: str, cfg: Any, out: str | Path, *, run_dir: str | Path | None = None,
                   options: Mapping[str, Any] | None = None, source_stage: str | None = None,
                   force: bool = False) -> Report:
    """Run one stage outside a flow, on the model a run directory left (its published models and artifacts
    available) or on ``options`` model + weights; ``out`` becomes a run directory like a flow's."""
    flow = standalone_flow(stage, run_dir, options or {}, source_stage)
    return run_flow(ResolvedFlow(flow, {stage: cfg}), out, force=force)[-1]

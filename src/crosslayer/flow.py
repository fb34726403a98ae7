"""The flow: a list of stages read from TOML, run in order over one run directory.

A stage is a function ``fn(ctx, cfg) -> StageResult`` registered with :func:`register_stage` together
with its frozen config dataclass. Stages live next to their technique (``crosslayer/<pkg>/stage.py``)
and are discovered by importing those modules, so adding a stage touches no shared file.

Run directory::

    RUN_DIR/config.toml          the resolved config (every default filled in)
    RUN_DIR/metrics.json         {"flow": ..., "<stage>": {metrics}, ...}
    RUN_DIR/reports/<stage>.json one Report per stage (figures embedded); index.json gives the order
    RUN_DIR/checkpoints/<stage>.pt  the model after each stage that produced one
    RUN_DIR/report.html          self-contained report, re-rendered by `crosslayer report RUN_DIR`
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import torch
from torch import nn

from crosslayer.config import check_range, from_mapping, load_toml, to_mapping
from crosslayer.data import DataSplits, load_splits
from crosslayer.device import resolve_device
from crosslayer.errors import ConfigError, StageError
from crosslayer.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir, save_torch
from crosslayer.report import Report, load_reports, write_html

__all__ = ["FlowConfig", "StageContext", "StageResult", "StageSpec", "available_stages", "default_flow_path",
           "load_flow_config", "load_run_model", "register_stage", "run_flow", "run_standalone"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FlowConfig:
    """The ``[flow]`` section: what model, which data, which stages.

    ``weights``: a trained state dict; ``baseline`` then evaluates instead of training.
    ``init_weights``: a state dict to start training from.
    """

    model: str = "lenet5"
    dataset: str = "mnist"
    weights: str = ""
    init_weights: str = ""
    data_dir: str = ""
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.1
    train_limit: int = 0
    test_limit: int = 0
    resize: int = 0       # 0 keeps the images' size; N resizes every image to N x N
    channels: int = 0     # 0 keeps the channel count; 1, 3 or 4 converts every image
    stages: tuple[str, ...] = ("baseline", "evaluate")

    def validate(self) -> None:
        check_range("flow.val_fraction", self.val_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("flow.train_limit", self.train_limit, 0)
        check_range("flow.test_limit", self.test_limit, 0)
        check_range("flow.resize", self.resize, 0, 4096)
        if self.channels not in (0, 1, 3, 4):
            raise ConfigError(f"flow.channels must be 0 (keep), 1, 3 or 4, got {self.channels}")
        if not self.stages:
            raise ConfigError("flow.stages is empty; name at least one stage")
        dup = {s for s in self.stages if self.stages.count(s) > 1}
        if dup:
            raise ConfigError(f"flow.stages names {', '.join(sorted(dup))} more than once")


@dataclass
class StageContext:
    """What a stage sees: the current model, the data, and what earlier stages published."""

    run_dir: Path
    flow: FlowConfig
    data: DataSplits
    model: nn.Module
    device: torch.device
    seed: int
    models: dict[str, nn.Module] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        d = self.run_dir / "stages" / name
        d.mkdir(parents=True, exist_ok=True)
        return d


@dataclass
class StageResult:
    """A stage's output: its report, optionally a new current model, named models and artifacts for later stages."""

    report: Report
    model: nn.Module | None = None
    publish: dict[str, nn.Module] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSpec:
    name: str
    config_cls: type
    fn: Callable[[StageContext, Any], StageResult]
    description: str


_REGISTRY: dict[str, StageSpec] = {}
_DISCOVERED = False


def register_stage(name: str, config_cls: type, description: str = "") -> Callable[[Callable[..., StageResult]],
                                                                                    Callable[..., StageResult]]:
    """Decorator registering ``fn(ctx, cfg) -> StageResult`` as flow stage ``name``."""
    def deco(fn: Callable[..., StageResult]) -> Callable[..., StageResult]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise RuntimeError(f"stage {name!r} registered twice")
        _REGISTRY[name] = StageSpec(name, config_cls, fn, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return deco


def _discover() -> None:
    """Import ``crosslayer.core_stages`` and every ``crosslayer.<pkg>.stage`` module."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import crosslayer

    importlib.import_module("crosslayer.core_stages")
    for info in pkgutil.iter_modules(crosslayer.__path__):
        if info.ispkg and importlib.util.find_spec(f"crosslayer.{info.name}.stage") is not None:
            importlib.import_module(f"crosslayer.{info.name}.stage")
    _DISCOVERED = True


def available_stages() -> dict[str, StageSpec]:
    _discover()
    return dict(_REGISTRY)


def default_flow_path() -> Path:
    return Path(__file__).parent / "flows" / "default.toml"


@dataclass(frozen=True)
class ResolvedFlow:
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


def load_flow_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> ResolvedFlow:
    """Read a flow TOML (the built-in default when ``path`` is None), apply ``[flow]`` overrides, validate."""
    doc = load_toml(path or default_flow_path())
    flow_raw = dict(doc.pop("flow", {}))
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
    cfgs: dict[str, Any] = {name: from_mapping(stages[name].config_cls, doc.get(name), section=name)
                            for name in flow.stages}
    for name in doc:  # a section of a stage that is not run is still checked, so a typo never passes silently
        if name not in cfgs:
            from_mapping(stages[name].config_cls, doc[name], section=name)
            if path is not None and "stages" not in (overrides or {}):
                log.warning("section [%s] is configured but %r is not in flow.stages; it is not run",
                            name, name)
    return ResolvedFlow(flow, cfgs)


def _write_outputs(run_dir: Path, flow: FlowConfig, reports: list[Report], seconds: float) -> None:
    metrics: dict[str, Any] = {"flow": {"model": flow.model, "dataset": flow.dataset, "seed": flow.seed,
                                        "stages": list(flow.stages), "seconds": seconds}}
    for r in reports:
        metrics[r.stage] = {**r.metrics, "seconds": r.seconds}
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_json(run_dir / "reports" / "index.json", {"stages": [r.stage for r in reports]})
    write_html(run_dir / "report.html", reports, title=f"crosslayer: {flow.model} on {flow.dataset}",
               summary={"model": flow.model, "dataset": flow.dataset, "seed": flow.seed,
                        "stages": ", ".join(r.stage for r in reports), "total seconds": round(seconds, 1)})


def build_context(run_dir: Path, flow: FlowConfig) -> StageContext:
    from crosslayer.models import build_model, load_weights, normalize_inputs
    from crosslayer.train import seed_everything

    data = load_splits(flow.dataset, flow.data_dir or None, val_fraction=flow.val_fraction, seed=flow.seed,
                       train_limit=flow.train_limit or None, test_limit=flow.test_limit or None,
                       resize=flow.resize or None, channels=flow.channels or None)
    seed_everything(flow.seed)
    c, h, _ = data.input_shape
    model = build_model(flow.model, num_classes=data.num_classes, in_channels=c, image_size=h)
    normalize_inputs(model, data.train)  # models with a Normalize layer (ResNet-20, MobileNetV2) get the data's stats
    for w in (flow.init_weights, flow.weights):
        if w:
            load_weights(model, w)
    device = resolve_device(flow.device)
    return StageContext(run_dir=run_dir, flow=flow, data=data, model=model.to(device), device=device,
                        seed=flow.seed)


def load_run_model(run_dir: str | Path, stage: str | None = None) -> nn.Module:
    """The model a run directory's ``stage`` (default: the last stage that produced one) left behind.

    Checkpoints are whole pickled modules, so only load run directories you produced yourself.
    """
    run = Path(run_dir)
    ckpts = run / "checkpoints"
    if stage is None:
        order = [r.stage for r in load_reports(run)]
        candidates = [s for s in reversed(order) if (ckpts / f"{s}.pt").is_file()]
        if not candidates:
            raise StageError(f"run directory {str(run)!r} holds no model checkpoint")
        stage = candidates[0]
    path = ckpts / f"{stage}.pt"
    if not path.is_file():
        raise StageError(f"run directory {str(run)!r} has no checkpoint for stage {stage!r}")
    model = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(model, nn.Module):
        raise StageError(f"{str(path)!r} does not hold a model")
    return model


def standalone_flow(stage: str, run_dir: str | Path | None, options: Mapping[str, Any]) -> FlowConfig:
    """The flow settings for running ``stage`` alone: from ``run_dir``'s config (its model and data
    settings) or from ``options`` (model + weights); ``options`` may override seed, device and data_dir."""
    opts = {k: v for k, v in options.items() if v is not None}
    if run_dir is None:
        if not opts.get("weights"):
            raise ConfigError(f"nothing to run {stage} on: give a RUN_DIR written by `crosslayer flow` / "
                              "`crosslayer train`, or --model with --weights")
        return from_mapping(FlowConfig, {**opts, "stages": [stage]}, section="flow")
    cfg_path = Path(run_dir) / "config.toml"
    if not cfg_path.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.toml)")
    raw = dict(load_toml(cfg_path).get("flow", {}))
    keep = {k: raw[k] for k in ("model", "dataset", "val_fraction", "train_limit", "test_limit", "data_dir",
                                "seed", "device", "resize", "channels") if k in raw}
    keep.update({k: opts[k] for k in ("seed", "device", "data_dir") if k in opts})
    return from_mapping(FlowConfig, {**keep, "stages": [stage]}, section="flow")


def run_standalone(stage: str, cfg: Any, out: str | Path, *, run_dir: str | Path | None = None,
                   options: Mapping[str, Any] | None = None) -> Report:
    """Run one stage outside a flow, on the model a run directory left (its earlier models published
    under their stage names) or on ``options`` model + weights; ``out`` is laid out like a flow run."""
    out_dir = ensure_writable_dir(out)
    flow = standalone_flow(stage, run_dir, options or {})
    ctx = build_context(out_dir, flow)
    if run_dir is not None:
        src = Path(run_dir)
        ctx.model = load_run_model(src).to(ctx.device)
        for name in [r.stage for r in load_reports(src)]:
            if (src / "checkpoints" / f"{name}.pt").is_file():
                ctx.models[_PUBLISHED.get(name, name)] = load_run_model(src, name).to(ctx.device)
    else:
        ctx.models["baseline"] = ctx.model
    atomic_write_text(out_dir / "config.toml", ResolvedFlow(flow, {stage: cfg}).to_toml())
    spec = available_stages()[stage]
    t0 = time.perf_counter()
    result = spec.fn(ctx, cfg)
    rep = result.report
    rep.stage, rep.seconds, rep.seed = stage, time.perf_counter() - t0, flow.seed
    rep.config = to_mapping(cfg) if dataclasses.is_dataclass(cfg) else {}
    if run_dir is not None:
        rep.notes.append(f"model taken from run directory {str(run_dir)!r}")
    if result.model is not None:
        save_torch(out_dir / "checkpoints" / f"{stage}.pt", result.model)
        save_torch(out_dir / "checkpoints" / f"{stage}.state_dict.pt", result.model.state_dict())
    rep.save(out_dir / "reports" / f"{stage}.json")
    _write_outputs(out_dir, flow, [rep], rep.seconds)
    return rep


# Name under which each stage's checkpoint is published to later stages (see docs/development.md).
_PUBLISHED = {"prune": "pruned", "quantize": "quantized", "approximate": "approximate"}


def run_flow(resolved: ResolvedFlow, run_dir: str | Path,
             on_stage: Callable[[str, Report], None] | None = None) -> list[Report]:
    """Run every stage of ``resolved`` in order, writing the run directory as it goes."""
    fresh = not Path(run_dir).exists()
    run = ensure_writable_dir(run_dir)
    flow = resolved.flow
    try:
        ctx = build_context(run, flow)  # model, weights and data are checked before anything is written
    except BaseException:
        if fresh:
            shutil.rmtree(run, ignore_errors=True)
        raise
    atomic_write_text(run / "config.toml", resolved.to_toml())
    stages = available_stages()
    reports: list[Report] = []
    t_start = time.perf_counter()
    for name in flow.stages:
        spec, cfg = stages[name], resolved.stage_configs[name]
        log.info("stage %s", name)
        t0 = time.perf_counter()
        try:
            result = spec.fn(ctx, cfg)
        except StageError:
            raise
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise StageError(f"stage {name!r} ran out of memory: {exc}") from exc
            raise
        rep = result.report
        rep.stage = name
        rep.seconds = time.perf_counter() - t0
        rep.seed = flow.seed
        rep.config = to_mapping(cfg) if dataclasses.is_dataclass(cfg) else {}
        if result.model is not None:
            ctx.model = result.model
            save_torch(run / "checkpoints" / f"{name}.pt", ctx.model)
            save_torch(run / "checkpoints" / f"{name}.state_dict.pt", ctx.model.state_dict())
        ctx.models.update(result.publish)
        ctx.artifacts.update(result.artifacts)
        ctx.reports[name] = rep
        rep.save(run / "reports" / f"{name}.json")
        reports.append(rep)
        _write_outputs(run, flow, reports, time.perf_counter() - t_start)
        if on_stage is not None:
            on_stage(name, rep)
    return reports

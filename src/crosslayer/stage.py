"""The stage kernel: what a flow stage receives, what it returns, how it is registered, and the typed
artifacts stages hand to each other.

It sits below the steps: a step (``crosslayer/<pkg>/stage.py``) imports this module, never the
orchestrator (:mod:`crosslayer.flow`), and the orchestrator names no step. Stages are discovered by
importing every ``crosslayer.<pkg>.stage`` module.

A stage is ``fn(ctx: StageContext, cfg) -> StageResult``. It reads the current model, the data and
what earlier stages published (named models in ``ctx.models``, typed artifacts through
``ctx.get(ARTIFACT)``) and returns its :class:`~crosslayer.report.Report`, optionally a new current
model, named models to publish and artifacts.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, overload

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.report import Report

__all__ = ["ARTIFACTS", "HW_ENERGY_PER_INFERENCE", "HW_ENERGY_PER_MAC", "IMC_ENERGY_PER_INFERENCE_PJ",
           "MEMORY_VOLTAGE", "MULTIPLIER_ASSIGNMENT", "PACKED_PATH", "PARETO_FRONT", "PARETO_POINTS",
           "PRUNING_MASKS", "RESILIENCE_DROP_PP", "RESILIENCE_RANKING", "WEIGHT_MEMORY_ENERGY_RATIO", "Artifact",
           "FlowConfig", "StageContext", "StageResult", "StageSpec", "available_stages", "discover",
           "register_stage"]

T = TypeVar("T")


@dataclass(frozen=True)
class Artifact(Generic[T]):
    """A typed, named value one stage publishes for later stages (and the run directory keeps).

    ``kind`` is checked when the value is published and when a run directory is read back;
    ``tensors`` artifacts (``{name: tensor}``) are stored with ``torch.save`` and read with
    ``weights_only=True``, the others as JSON.
    """

    name: str
    kind: type | tuple[type, ...]
    doc: str
    tensors: bool = False

    def check(self, value: Any) -> T:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
            raise StageError(f"artifact {self.name!r} must be {' or '.join(k.__name__ for k in kinds)}, "
                             f"got {type(value).__name__}")
        if self.tensors and not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                    for k, v in cast(dict[Any, Any], value).items()):
            raise StageError(f"artifact {self.name!r} must map names to tensors")
        return cast(T, value)


ARTIFACTS: dict[str, Artifact[Any]] = {}


def _artifact(name: str, kind: type | tuple[type, ...], doc: str, tensors: bool = False) -> Artifact[Any]:
    a: Artifact[Any] = Artifact(name, kind, doc, tensors)
    ARTIFACTS[name] = a
    return a


PRUNING_MASKS: Artifact[dict[str, torch.Tensor]] = _artifact(
    "pruning_masks", dict, "{parameter name: 0/1 mask} of unstructured pruning", tensors=True)
RESILIENCE_RANKING: Artifact[list[str]] = _artifact(
    "resilience_ranking", list, "layer names, most fault-resilient first")
RESILIENCE_DROP_PP: Artifact[dict[str, float]] = _artifact(
    "resilience_drop_pp", dict, "{layer: accuracy drop in pp} under the resilience campaign")
MULTIPLIER_ASSIGNMENT: Artifact[dict[str, dict[str, Any]]] = _artifact(
    "multiplier_assignment", dict, "{layer: {name, relative_power}} of the approximate model")
HW_ENERGY_PER_INFERENCE: Artifact[float] = _artifact(
    "hw_energy_per_inference", (float, int), "energy of one inference on the accelerator (pJ)")
HW_ENERGY_PER_MAC: Artifact[float] = _artifact(
    "hw_energy_per_mac", (float, int), "average energy per MAC on the accelerator (pJ)")
IMC_ENERGY_PER_INFERENCE_PJ: Artifact[float] = _artifact(
    "imc_energy_per_inference_pj", (float, int), "energy of one inference in memory (pJ)")
PARETO_POINTS: Artifact[list[dict[str, Any]]] = _artifact(
    "pareto_points", list, "the explored (scheme, sparsity, bits) points with their figures")
PARETO_FRONT: Artifact[list[int]] = _artifact(
    "pareto_front", list, "indices into pareto_points of the accuracy-vs-size Pareto front")
MEMORY_VOLTAGE: Artifact[float] = _artifact(
    "memory_voltage", (float, int), "lowest weight-memory supply voltage (V) within the accuracy budget")
WEIGHT_MEMORY_ENERGY_RATIO: Artifact[float] = _artifact(
    "weight_memory_energy_ratio", (float, int), "weight-memory access energy at that voltage / at nominal")
PACKED_PATH: Artifact[str] = _artifact(
    "packed_path", str, "the packed model file, relative to the run directory")


@dataclass(frozen=True, kw_only=True)
class FlowConfig(Config):
    """The ``[flow]`` section: what model, which data, which stages.

    ``model``: a built-in name or a user factory (``file.py:factory`` / ``package.module:factory``; that
    is code and runs as code). ``dataset``: a dataset name or path. ``weights``: a trained state dict;
    ``baseline`` then evaluates instead of training. ``init_weights``: a state dict to start training
    from. ``resize``: 0 keeps the images' size, N resizes every image to N x N. ``channels``: 0 keeps
    the channel count, 1, 3 or 4 converts every image. ``source_run``: a run directory whose model (that
    of ``source_stage``, default its last) this flow starts from, its published models and artifacts
    available to the stages.
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
    resize: int = 0
    channels: int = 0
    source_run: str = ""
    source_stage: str = ""
    stages: tuple[str, ...] = ("baseline", "evaluate")

    def validate(self) -> None:
        check_range("flow.val_fraction", self.val_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("flow.train_limit", self.train_limit, 0)
        check_range("flow.test_limit", self.test_limit, 0)
        check_range("flow.seed", self.seed, 0)
        check_range("flow.resize", self.resize, 0, 4096)
        if self.channels not in (0, 1, 3, 4):
            raise ConfigError(f"flow.channels must be 0 (keep), 1, 3 or 4, got {self.channels}")
        if not self.stages:
            raise ConfigError("flow.stages is empty; name at least one stage")
        dup = {s for s in self.stages if self.stages.count(s) > 1}
        if dup:
            raise ConfigError(f"flow.stages names {', '.join(sorted(dup))} more than once")
        if self.source_stage and not self.source_run:
            raise ConfigError("flow.source_stage needs flow.source_run")


@dataclass
class StageContext:
    """What a stage sees: the current model, the data, and what earlier stages published."""

    run_dir: Path | None
    flow: FlowConfig
    data: DataSplits
    model: nn.Module
    device: torch.device
    seed: int
    models: dict[str, nn.Module] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        """A folder for the files of stage ``name`` inside the run directory."""
        if self.run_dir is None:
            raise StageError(f"stage {name!r} writes files, but this context has no run directory")
        d = self.run_dir / "stages" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @overload
    def get(self, artifact: Artifact[T]) -> T | None: ...

    @overload
    def get(self, artifact: Artifact[T], default: T) -> T: ...

    def get(self, artifact: Artifact[T], default: T | None = None) -> T | None:
        """The value an earlier stage published under ``artifact``, or ``default``."""
        value = self.artifacts.get(artifact.name)
        return default if value is None else cast(T, value)


@dataclass
class StageResult:
    """A stage's output: its report, optionally a new current model, named models and artifacts for later
    stages. ``artifacts`` is keyed by :class:`Artifact` (or its registered name)."""

    report: Report
    model: nn.Module | None = None
    publish: dict[str, nn.Module] = field(default_factory=dict)
    artifacts: dict[Any, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # keyed by name from here on, whichever key the stage used
        self.artifacts = {k.name if isinstance(k, Artifact) else k: v for k, v in self.artifacts.items()}

    def checked_artifacts(self) -> dict[str, Any]:
        """``{name: value}`` with every key a known artifact and every value of its kind."""
        out: dict[str, Any] = {}
        for key, value in self.artifacts.items():
            art = key if isinstance(key, Artifact) else ARTIFACTS.get(key)
            if art is None:
                raise StageError(f"unknown artifact {key!r}; declare it in crosslayer.stage")
            out[art.name] = art.check(value)
        return out


@dataclass(frozen=True)
class StageSpec:
    """A registered stage. ``needs_model``: it works on a trained model, so a stage that ``provides_model``
    (trains or loads one, like ``baseline``) must run before it."""

    name: str
    config_cls: type
    fn: Callable[[StageContext, Any], StageResult]
    description: str
    needs_model: bool = True
    provides_model: bool = False


_REGISTRY: dict[str, StageSpec] = {}
_DISCOVERED = False


def register_stage(name: str, config_cls: type, description: str = "", *, needs_model: bool = True,
                   provides_model: bool = False) -> Callable[[Callable[..., StageResult]], Callable[..., StageResult]]:
    """Decorator registering ``fn(ctx, cfg) -> StageResult`` as flow stage ``name``."""
    def deco(fn: Callable[..., StageResult]) -> Callable[..., StageResult]:
        old = _REGISTRY.get(name)
        if old is not None and old.fn.__qualname__ != fn.__qualname__:
            raise RuntimeError(f"stage {name!r} registered twice")
        _REGISTRY[name] = StageSpec(name, config_cls, fn,
                                    description or (fn.__doc__ or "").strip().split("\n")[0], needs_model,
                                    provides_model)
        return fn
    return deco


def discover() -> None:
    """Import ``crosslayer.core_stages`` and every ``crosslayer.<pkg>.stage`` module (which registers
    the stage and, through its imports, the checkpoint codecs of the step's layers)."""
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
    """Every registered stage by name."""
    discover()
    return dict(_REGISTRY)

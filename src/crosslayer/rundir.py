"""The run directory: its layout, how a run starts in it (fresh, resumed, refused or forced), and how its
models and artifacts are written and read back as data.

Layout::

    RUN_DIR/run.json                 state: format, config digest, the stages done and what each left
    RUN_DIR/config.toml              the resolved config (every default filled in)
    RUN_DIR/metrics.json             {"flow": ..., "<stage>": {metrics}, ...}
    RUN_DIR/reports/<stage>.json     one Report per stage; index.json gives the order
    RUN_DIR/checkpoints/<model>.pt   a state dict (read with weights_only=True)
    RUN_DIR/checkpoints/<model>.json its architecture record (crosslayer.checkpoint) and how to build the base
    RUN_DIR/artifacts/<stage>.json   typed artifacts a stage published (tensors in <stage>.pt)
    RUN_DIR/stages/<stage>/          files a stage wrote (packed model, ONNX, plots)
    RUN_DIR/report.html              self-contained report

Everything in a run directory is data: nothing in it is unpickled or imported, names read from it are
checked before they become paths, and every file read is size-bounded. A model whose config names a
user factory (``file.py:factory``) is rebuilt only when the caller names that factory itself (the
factory is code; a run directory cannot make crosslayer run it).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crosslayer.checkpoint import CheckpointError, load_checkpoint, load_state_dict_file, save_checkpoint
from crosslayer.errors import ConfigError, CrossLayerError, ModelError
from crosslayer.fileio import atomic_write_json, ensure_writable_dir, save_torch

__all__ = ["RUN_FORMAT", "ModelSpec", "RunDir", "RunDirError", "check_name", "load_run_model"]

RUN_FORMAT = 2
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_MAX_JSON_BYTES = 64 << 20
_RUN_FILES = ("run.json", "config.toml", "metrics.json", "report.html")
_RUN_DIRS = ("reports", "checkpoints", "artifacts", "stages")


class RunDirError(CrossLayerError):
    """A run directory that cannot be used as asked (mixed runs, an older format, a name that escapes it)."""


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a plain file-name component (no separators, no ``..``), else ``RunDirError``."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise RunDirError(f"{what} {name!r} is not a plain name (letters, digits, '_', '-', '.'; no path)")
    return name


def read_json(path: Path, what: str) -> Any:
    """A JSON file, size-bounded; a missing, oversized or malformed file is a ``RunDirError``."""
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            raise RunDirError(f"{what} {str(path)!r} is larger than {_MAX_JSON_BYTES >> 20} MiB")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RunDirError(f"cannot read {what} {str(path)!r}: {exc}") from exc


@dataclass(frozen=True)
class ModelSpec:
    """How the base model of a checkpoint is built: a model name (built-in or user factory) and the
    sizes its data gave it."""

    model: str
    num_classes: int
    in_channels: int
    image_size: int

    @property
    def is_user_code(self) -> bool:
        return ":" in self.model

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "image_size": self.image_size}

    @classmethod
    def from_json(cls, d: Any, where: str) -> ModelSpec:
        try:
            spec = cls(str(d["model"]), int(d["num_classes"]), int(d["in_channels"]), int(d["image_size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{where}: the model description is malformed ({exc})") from exc
        for k in ("num_classes", "in_channels", "image_size"):
            if not 1 <= getattr(spec, k) <= 1 << 16:
                raise RunDirError(f"{where}: {k} = {getattr(spec, k)} is out of range")
        return spec

    def build(self, trusted_model: str | None = None) -> nn.Module:
        """The freshly built base model. A user factory is only run when ``trusted_model`` names it."""
        from crosslayer.models import build_model

        name = self.model
        if self.is_user_code:
            if not trusted_model:
                raise ModelError(f"this model was built by the user factory {self.model!r}, which is code; a run "
                                 "directory is data and cannot make crosslayer run code. Pass the factory yourself "
                                 f"(--model {self.model}) to rebuild it")
            name = trusted_model
        elif trusted_model and trusted_model != self.model:
            name = trusted_model
        return build_model(name, num_classes=self.num_classes, in_channels=self.in_channels,
                           image_size=self.image_size)


@dataclass
class StageRecord:
    """What one finished stage left in the run directory."""

    stage: str
    model: str | None = None
    published: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "model": self.model, "published": self.published, "artifacts": self.artifacts}

    @classmethod
    def from_json(cls, d: Any) -> StageRecord:
        if not isinstance(d, Mapping):
            raise RunDirError("run.json: a stage entry is not a table")
        model = d.get("model")
        published = d.get("published", {})
        artifacts = d.get("artifacts", [])
        if not isinstance(published, Mapping) or not isinstance(artifacts, list):
            raise RunDirError("run.json: a stage entry is malformed")
        return cls(check_name(d.get("stage", ""), "stage"),
                   None if model is None else check_name(model, "model name"),
                   {check_name(k, "model name"): check_name(v, "model name") for k, v in published.items()},
                   [check_name(a, "artifact name") for a in artifacts])


class RunDir:
    """One run directory (see the module docstring for its layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ----- layout ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.path / "run.json"

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def html_path(self) -> Path:
        return self.path / "report.html"

    def report_path(self, stage: str) -> Path:
        return self.path / "reports" / f"{check_name(stage, 'stage')}.json"

    def checkpoint_stem(self, model: str) -> Path:
        return self.path / "checkpoints" / check_name(model, "model name")

    def stage_dir(self, stage: str) -> Path:
        d = self.path / "stages" / check_name(stage, "stage")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def inside(self, relative: str, what: str = "path") -> Path:
        """``RUN_DIR/relative``, refused if it would leave the run directory."""
        root = self.path.resolve()
        p = (root / relative).resolve()
        if p != root and root not in p.parents:
            raise RunDirError(f"{what} {relative!r} points outside the run directory {str(self.path)!r}")
        return p

    # ----- state ----------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        return any((self.path / f).exists() for f in _RUN_FILES) or (self.path / "reports").is_dir()

    def state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            if (self.path / "checkpoints").is_dir() or (self.path / "reports").is_dir():
                raise RunDirError(f"{str(self.path)!r} was written by an older crosslayer whose checkpoints are "
                                  "pickled modules; they are never loaded, because unpickling a file runs code "
                                  "from it. Re-run the flow with this version (use --force to reuse the "
                                  "directory)")
            raise RunDirError(f"{str(self.path)!r} is not a run directory (no run.json); run `crosslayer flow "
                              "--out DIR` or a command with --out first")
        st = read_json(self.state_path, "run state")
        if not isinstance(st, Mapping) or st.get("format") != RUN_FORMAT:
            raise RunDirError(f"{str(self.state_path)!r} has format "
                              f"{st.get('format') if isinstance(st, Mapping) else '?'!r}; this crosslayer "
                              f"reads run directories of format {RUN_FORMAT}")
        return dict(st)

    def done(self) -> list[StageRecord]:
        st = self.state()
        stages = st.get("done", [])
        if not isinstance(stages, list):
            raise RunDirError(f"{str(self.state_path)!r}: 'done' must be a list")
        return [StageRecord.from_json(d) for d in stages]

    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_json(self.state().get("model_spec"), str(self.state_path))

    def start(self, config_text: str, model_spec: ModelSpec, *, force: bool = False) -> list[StageRecord]:
        """Prepare the directory for a run of ``config_text``; returns the stages an earlier, identical run
        already finished (to resume), else ``[]``. A directory holding a different run, an older format or
        other files is refused unless ``force``, which first removes the older run's files."""
        digest = hashlib.sha256(config_text.encode("utf-8")).hexdigest()
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {str(self.path)!r} is a file, not a directory")
        ensure_writable_dir(self.path)
        if force:
            self.clear()
        elif self.path.is_dir() and any(self.path.iterdir()):
            if not self.holds_run():
                raise RunDirError(f"--out {str(self.path)!r} is not empty and holds no crosslayer run; choose a "
                                  "new or empty directory (or --force to write into it)")
            st = self.state()
            if st.get("config_sha256") != digest:
                raise RunDirError(f"{str(self.path)!r} already holds a run with a different config; choose another "
                                  "--out, or pass --force to remove that run's files and start afresh")
            return self.done()
        ensure_writable_dir(self.path)
        self._write_state({"format": RUN_FORMAT, "config_sha256": digest, "model_spec": model_spec.to_json(),
                           "done": []})
        return []

    def clear(self) -> None:
        """Remove the run's own files and folders (other files in the directory stay)."""
        if not self.path.is_dir():
            return
        for f in _RUN_FILES:
            (self.path / f).unlink(missing_ok=True)
        for d in _RUN_DIRS:
            if (self.path / d).is_dir():
                shutil.rmtree(self.path / d)

    def truncate(self, keep: int) -> None:
        """Forget every finished stage after the first ``keep`` (a resumed run re-runs them)."""
        st = self.state()
        st["done"] = st.get("done", [])[:keep]
        self._write_state(st)

    def finish_stage(self, record: StageRecord) -> None:
        st = self.state()
        st["done"] = [d for d in st.get("done", []) if d.get("stage") != record.stage] + [record.to_json()]
        self._write_state(st)

    def _write_state(self, st: Mapping[str, Any]) -> None:
        atomic_write_json(self.state_path, st)

    # ----- models ---------------------------------------------------------------------------------
    def save_model(self, name: str, model: nn.Module, base: nn.Module, stage: str) -> None:
        save_checkpoint(self.checkpoint_stem(name), model, base, stage=stage)

    def load_model(self, name: str, *, trusted_model: str | None = None) -> nn.Module:
        """The checkpoint ``name``, rebuilt on the run's base model."""
        stem = self.checkpoint_stem(name)
        if not stem.with_suffix(".json").is_file():
            raise RunDirError(f"run directory {str(self.path)!r} has no model {name!r}")
        return load_checkpoint(stem, self.model_spec().build(trusted_model))

    def model_of(self, stage: str | None = None) -> str:
        """The name of the model ``stage`` left as the current model (default: the last one any stage left). A
        stage that left no current model but published models (``approximate``, ``imc``, ``memory``) gives the
        one it published under its own name, or its only one."""
        done = self.done()
        if stage is not None:
            check_name(stage, "stage")
            match = [d for d in done if d.stage == stage]
            if not match:
                raise RunDirError(f"run directory {str(self.path)!r} has no finished stage {stage!r}; its stages: "
                                  f"{', '.join(d.stage for d in done) or '(none)'}")
            rec = match[0]
            if rec.model is None and rec.published:
                if len(rec.published) == 1:
                    return next(iter(rec.published.values()))
                if stage in rec.published:
                    return rec.published[stage]
            if rec.model is None:
                with_models = [d.stage for d in done if d.model or d.published]
                raise RunDirError(f"stage {stage!r} of {str(self.path)!r} left no model; stages that did: "
                                  f"{', '.join(with_models) or '(none)'}")
            return rec.model
        for d in reversed(done):
            if d.model is not None:
                return d.model
        raise RunDirError(f"run directory {str(self.path)!r} holds no model")

    # ----- artifacts ------------------------------------------------------------------------------
    def save_artifacts(self, stage: str, values: Mapping[str, Any], tensor_names: set[str]) -> list[str]:
        plain = {k: v for k, v in values.items() if k not in tensor_names}
        tensors = {k: v for k, v in values.items() if k in tensor_names}
        d = self.path / "artifacts"
        if plain:
            atomic_write_json(d / f"{check_name(stage, 'stage')}.json", plain)
        if tensors:
            flat = {f"{k}/{n}": t.detach().cpu() for k, v in tensors.items() for n, t in v.items()}
            save_torch(d / f"{check_name(stage, 'stage')}.pt", flat)
        return sorted(values)

    def load_artifacts(self, stage: str, tensor_names: set[str]) -> dict[str, Any]:
        d = self.path / "artifacts"
        out: dict[str, Any] = {}
        jp, tp = d / f"{check_name(stage, 'stage')}.json", d / f"{stage}.pt"
        if jp.is_file():
            plain = read_json(jp, "artifacts")
            if not isinstance(plain, Mapping):
                raise RunDirError(f"{str(jp)!r} is not a JSON object")
            out.update(plain)
        if tp.is_file():
            for key, t in load_state_dict_file(tp).items():
                art, _, sub = key.partition("/")
                if art not in tensor_names:
                    raise RunDirError(f"{str(tp)!r} holds tensors of unknown artifact {art!r}")
                out.setdefault(art, {})[sub] = t
        return out


def load_run_model(run_dir: str | Path, stage: str | None = None, *, trusted_model: str | None = None,
                   device: torch.device | str = "cpu") -> nn.Module:
    """The model a run directory's ``stage`` (default: the last stage that left one) produced, rebuilt from
    its config, architecture record and state dict. ``trusted_model`` names the user factory when the run
    used one (see :meth:`ModelSpec.build`)."""
    run = RunDir(run_dir)
    try:
        return run.load_model(run.model_of(stage), trusted_model=trusted_model).to(device)
    except CheckpointError as exc:
        raise RunDirError(f"{str(run.path)!r}: {exc}") from exc


def model_spec_for(model: str, data_shape: tuple[int, int, int], num_classes: int) -> ModelSpec:
    c, h, _ = data_shape
    return ModelSpec(model, num_classes, c, h)


BaseFactory = Callable[[], nn.Module]


def require_dir_for_file(path: Path, what: str) -> None:
    """Refuse an output file path that is an existing directory."""
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; give a file name")

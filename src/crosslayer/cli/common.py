"""Options and helpers shared by every command: console, JSON output, error handling, logging."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from crosslayer.errors import CrossLayerError

__all__ = [
    "DataDirOpt",
    "DatasetOpt",
    "DeviceOpt",
    "ForceOpt",
    "JsonOpt",
    "ModelOpt",
    "ModelSource",
    "OutOpt",
    "RunDirArg",
    "SeedOpt",
    "StageOpt",
    "WeightsOpt",
    "console",
    "emit",
    "handle_errors",
    "model_source",
    "setup_logging",
]

console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

SeedOpt = typer.Option(0, "--seed", help="Random seed; the same seed gives the same numbers.")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
JsonOpt = typer.Option(False, "--json", help="Print the metrics as JSON on stdout.")
DataDirOpt = typer.Option(None, "--data-dir", help="Folder of a named dataset's files (MNIST IDX, CIFAR binaries; "
                                                    "else $CROSSLAYER_DATA, else download into the cache).")
OutOpt = typer.Option(None, "--out", "-o", help="Output (run) directory.")
ForceOpt = typer.Option(False, "--force", help="If --out already holds another run, remove that run's files and "
                                              "start afresh (without it such a directory is refused; the same "
                                              "run is resumed).")


# The one option group for "which model": a run directory (and its stage), or --model with --weights.
RunDirArg = typer.Argument(None, help="A run directory (written by `crosslayer flow`, `train` or any command's --out): "
                                      "use the model its last stage left, or --stage's. Else give --weights.")
StageOpt = typer.Option(None, "--stage", help="With RUN_DIR: the stage whose model to use (default: the last one "
                                              "that left a model).")
ModelOpt = typer.Option(None, "--model", "-m", help="Built-in model (lenet5, the default; lenet300, vgg-small, "
                                                    "resnet20, mobilenetv2) or a user factory file.py:factory (code, "
                                                    "it runs as code). With RUN_DIR: only to name the run's own "
                                                    "user factory.")
WeightsOpt = typer.Option(None, "--weights", help="Trained state dict of --model (read as data, weights_only).")
DatasetOpt = typer.Option(None, "--dataset", "-d", help="mnist (the default), fashion-mnist, cifar10, cifar100, a .npz "
                                                        "file or an image folder; with RUN_DIR: the run's.")


@dataclass(frozen=True)
class ModelSource:
    """Where a command's model and data come from: a run directory, or a model name with weights."""

    run_dir: Path | None
    stage: str | None
    options: dict[str, Any]

    def run(self, step: str, cfg: Any, out: Path, *, force: bool = False) -> Any:
        """Run flow stage ``step`` on this model; ``out`` becomes a run directory. Returns its Report."""
        from crosslayer.flow import run_standalone

        return run_standalone(step, cfg, out, run_dir=self.run_dir, options=self.options, source_stage=self.stage,
                              force=force)

    def context(self, step: str = "evaluate", *, untrained: bool = False) -> Any:
        """The model, data and device (a StageContext that writes nothing), for commands that are no stage.
        ``untrained``: without a RUN_DIR or --weights, the freshly built --model (for commands that need only
        its architecture, or train it themselves)."""
        from crosslayer.flow import build_context, standalone_flow

        if untrained and self.run_dir is None and not self.options.get("weights"):
            from crosslayer.config import from_mapping
            from crosslayer.stage import FlowConfig

            return build_context(None, from_mapping(FlowConfig, {**self.options, "stages": [step]}, section="flow"))
        return build_context(None, standalone_flow(step, self.run_dir, self.options, self.stage))


def model_source(run_dir: Path | None, *, stage: str | None = None, model: str | None = None,
                 weights: Path | None = None, dataset: str | None = None, data_dir: str | None = None,
                 seed: int | None = None, device: str | None = None, **limits: int | None) -> ModelSource:
    """The :class:`ModelSource` of a command's options (see :data:`RunDirArg` and the options beside it)."""
    from crosslayer.errors import ConfigError

    if stage is not None and run_dir is None:
        raise ConfigError("--stage needs a RUN_DIR")
    options: dict[str, Any] = {"model": model, "weights": str(weights) if weights else None, "dataset": dataset,
                               "data_dir": data_dir or None, "seed": seed, "device": device}
    options.update({k: v for k, v in limits.items() if v})
    return ModelSource(run_dir, stage, {k: v for k, v in options.items() if v is not None})


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)


def handle_errors(fn: F) -> F:
    """Turn a user-caused failure (a ``CrossLayerError``, a file the system refused, memory running out)
    into one red line on stderr and exit code 2; an interrupt exits 130. Other exceptions are bugs and
    keep their traceback."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CrossLayerError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except OSError as exc:  # a path the system refused: missing, a folder, read-only, a full disk
            where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
            console.print(f"[bold red]error:[/] {escape(str(exc.strerror or exc))}{escape(where)}", highlight=False)
            raise typer.Exit(2) from None
        except MemoryError:
            console.print("[bold red]error:[/] ran out of memory; use smaller inputs or batch sizes", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
    return wrapper  # type: ignore[return-value]


def emit(metrics: dict[str, Any], as_json: bool, title: str = "metrics") -> None:
    """Print metrics as JSON on stdout, or as a table on the console."""
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2, default=str) + "\n")
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (dict, list)):
            continue
        table.add_row(str(k), str(v))
    Console().print(table)

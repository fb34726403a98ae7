"""Options and helpers shared by every command: console, JSON output, error handling, logging."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from crosslayer.errors import CrossLayerError

__all__ = ["DataDirOpt", "DatasetOpt", "DeviceOpt", "JsonOpt", "OutOpt", "SeedOpt", "console", "emit", "handle_errors",
           "setup_logging"]

console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

SeedOpt = typer.Option(0, "--seed", help="Random seed; the same seed gives the same numbers.")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
JsonOpt = typer.Option(False, "--json", help="Print the metrics as JSON on stdout.")
DataDirOpt = typer.Option(None, "--data-dir", help="Folder of a named dataset's files (MNIST IDX, CIFAR binaries; "
                                                    "else $CROSSLAYER_DATA, else download into the cache).")
DatasetOpt = typer.Option("mnist", "--dataset", "-d", help="mnist, fashion-mnist, cifar10, cifar100, a .npz file "
                                                           "or an image folder (train/<class>/..., test/<class>/...).")
OutOpt = typer.Option(None, "--out", "-o", help="Output (run) directory.")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)


def handle_errors(fn: F) -> F:
    """Turn a ``CrossLayerError`` into one red line on stderr and exit code 2."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CrossLayerError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]; results written so far are kept")
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

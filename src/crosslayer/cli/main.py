"""The ``crosslayer`` command. Command groups are discovered: every module in ``crosslayer.cli`` with a
``register(app)`` function adds its commands."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import crosslayer.cli as cli_pkg
from crosslayer import __version__

app = typer.Typer(name="crosslayer", help="Cross-layer optimisation of DNNs for the edge.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crosslayer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Cross-layer optimisation of deep neural networks for the edge."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda i: i.name):
        if info.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"crosslayer.cli.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

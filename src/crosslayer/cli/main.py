"""The ``crosslayer`` command. Command groups are discovered: every module in ``crosslayer.cli`` with a
``register(app)`` function adds its commands."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import typer
from rich.markup import escape
from typer.models import ParameterInfo

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


def _plain_help(typer_app: typer.Typer, done: set[int]) -> None:
    """Help texts are plain text, but rich reads ``[flow]`` or ``[crossbar]`` in them as markup and drops the
    words: escape the square brackets of every command's, group's and option's help, once each (options are
    shared between commands)."""
    for cmd in typer_app.registered_commands:
        if cmd.callback is None or id(cmd) in done:
            continue
        done.add(id(cmd))
        doc = cmd.help if isinstance(cmd.help, str) else inspect.getdoc(cmd.callback)
        if doc:
            cmd.help = escape(inspect.cleandoc(doc))
        for param in inspect.signature(cmd.callback).parameters.values():
            info = param.default
            if isinstance(info, ParameterInfo) and isinstance(info.help, str) and id(info) not in done:
                done.add(id(info))
                info.help = escape(info.help)
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if sub is None or id(sub) in done:
            continue
        done.add(id(sub))
        if isinstance(sub.info.help, str):
            sub.info.help = escape(sub.info.help)
        _plain_help(sub, done)


_register_all()
_plain_help(app, set())


def main() -> None:
    app()


if __name__ == "__main__":
    main()

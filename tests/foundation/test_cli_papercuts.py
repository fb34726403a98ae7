"""CLI papercuts: every command's help keeps the words it writes in square brackets, and `crosslayer stages` shows
every option with its type and default (a required one as "required"), as text and as JSON."""

from __future__ import annotations

import dataclasses
import json
import re

import typer
from typer.testing import CliRunner

from crosslayer.cli.flow import _options
from crosslayer.cli.main import app
from crosslayer.config import Config
from crosslayer.flow import available_stages

runner = CliRunner()
BOX = re.compile(r"[│╭╮╰╯─┃━┏┓┗┛]")


def _commands(group, path: tuple[str, ...] = ()):
    """(path, click command) of every command under ``group``."""
    for name, cmd in getattr(group, "commands", {}).items():
        if getattr(cmd, "commands", None):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def _bracketed(text: str) -> list[str]:
    """The ``[...]`` words of a help text as its author wrote them (rich escapes ``\\[`` undone)."""
    return re.findall(r"\[[^\[\]]+\]", text.replace("\\[", "["))


def _flat(text: str) -> str:
    return " ".join(BOX.sub(" ", text).split())


def test_help_of_every_command_keeps_its_brackets() -> None:
    root = typer.main.get_command(app)
    checked: list[str] = []
    commands = list(_commands(root))
    assert len(commands) > 20
    for path, cmd in commands:
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        words = [w for t in texts for w in _bracketed(t)]
        if not words:
            continue
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
        assert res.exit_code == 0, res.output
        shown = _flat(res.output)
        for w in words:
            assert _flat(w) in shown, f"`crosslayer {' '.join(path)} --help` lost {w!r}"
            checked.append(f"{' '.join(path)}: {w}")
    # the help texts that motivated the check are among those checked
    assert any("[flow]" in c for c in checked) and any("[crossbar]" in c for c in checked), checked


def test_stages_lists_options_types_and_defaults() -> None:
    res = runner.invoke(app, ["stages", "imc"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    shown = _flat(res.output)
    assert "[imc]" in shown and "crossbar.d2d_sigma float 0.5" in shown and "sigmas tuple[float, ...]" in shown
    assert "source 'current' | 'baseline' \"current\"" in shown
    res = runner.invoke(app, ["stages", "--json"])
    assert res.exit_code == 0 and "MISSING" not in res.stdout and "<" not in res.stdout
    info = json.loads(res.stdout)
    assert set(info) == set(available_stages())
    assert info["approximate"]["options"]["power_overrides"] == {"type": "dict[str, float]", "default": {}}
    assert info["imc_train"]["options"]["crossbar.c2c_sigma"]["default"] == 0.2
    assert info["quantize"]["options"]["weight_frac_bits"] == {"type": "int | None", "default": None}
    res = runner.invoke(app, ["stages", "nope"])
    assert res.exit_code == 2 and "unknown stage 'nope'" in res.output


def test_a_required_option_says_required() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Needs(Config):
        rate: float
        bits: tuple[int, ...] = (8, 4)

    assert _options(Needs) == [("rate", "float", "required"), ("bits", "tuple[int, ...]", [8, 4])]

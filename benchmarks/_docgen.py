"""Generated figure blocks in the docs: markers, number formats, and the check / write of a set of blocks.

A doc keeps its hand-written prose; each generated part sits between two markers::

    <!-- results:NAME begin -->
    ... rendered from benchmarks/results/*.json ...
    <!-- results:NAME end -->

A :class:`Block` names its doc, its marker name, the results files it reads and a renderer (a function of a
results loader returning the block's Markdown). ``check`` lists every disagreement, ``write`` rewrites the
blocks in place. No torch, no training: reading JSON and formatting numbers only.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

Loader = Callable[[str], dict[str, Any]]
Renderer = Callable[[Loader], str]

_MARK = re.compile(r"<!-- results:(?P<name>[a-z0-9_-]+) (?P<kind>begin|end) -->")


@dataclass(frozen=True, kw_only=True)
class Block:
    """One generated block: ``name`` between its markers in ``doc`` (a path relative to the repository root),
    rendered from the results files ``sources`` (names without ``.json``). ``headline`` locates one figure the
    block quotes, as (results file, key path), so a test can change it and see the check fail."""

    doc: str
    name: str
    sources: tuple[str, ...]
    render: Renderer
    headline: tuple[str, tuple[str | int, ...]]


def load_results(name: str) -> dict[str, Any]:
    """``benchmarks/results/<name>.json`` as a dict."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    if not isinstance(data, dict):
        raise ValueError(f"benchmarks/results/{name}.json does not hold a JSON object")
    return data


# ---------------------------------------------------------------- markers

def find_blocks(text: str) -> dict[str, tuple[int, int]]:
    """Marker name -> (start, end) character offsets of the body between its begin and end markers.
    Raises ValueError on a marker without its partner, a nested block or a name used twice."""
    spans: dict[str, tuple[int, int]] = {}
    open_name: str | None = None
    open_at = 0
    for m in _MARK.finditer(text):
        name, kind = m.group("name"), m.group("kind")
        if kind == "begin":
            if open_name is not None:
                raise ValueError(f"block {name!r} begins inside block {open_name!r}")
            if name in spans:
                raise ValueError(f"block {name!r} appears twice")
            open_name, open_at = name, m.end()
        else:
            if open_name != name:
                raise ValueError(f"end marker of {name!r} without its begin marker")
            spans[name] = (open_at, m.start())
            open_name = None
    if open_name is not None:
        raise ValueError(f"block {open_name!r} has no end marker")
    return spans


def _body(markdown: str) -> str:
    return "\n" + markdown.strip("\n") + "\n"


def replace_blocks(text: str, rendered: dict[str, str]) -> str:
    """``text`` with the body of every block named in ``rendered`` replaced (markers kept)."""
    spans = find_blocks(text)
    missing = sorted(set(rendered) - set(spans))
    if missing:
        raise ValueError(f"no markers for block(s) {', '.join(missing)}")
    out, pos = [], 0
    for name, (start, end) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        if name in rendered:
            out += [text[pos:start], _body(rendered[name])]
            pos = end
    out.append(text[pos:])
    return "".join(out)


def _by_doc(blocks: Iterable[Block]) -> dict[str, list[Block]]:
    docs: dict[str, list[Block]] = {}
    for b in blocks:
        docs.setdefault(b.doc, []).append(b)
    return docs


def check(blocks: Iterable[Block], *, root: Path = ROOT, loader: Loader = load_results) -> list[str]:
    """Every disagreement between the docs and their results files, one line each (empty: all agree)."""
    problems: list[str] = []
    for doc, group in _by_doc(blocks).items():
        text = (root / doc).read_text()
        try:
            spans = find_blocks(text)
        except ValueError as e:
            problems.append(f"{doc}: {e}")
            continue
        for b in group:
            if b.name not in spans:
                problems.append(f"{doc}: no block {b.name!r} (markers missing)")
                continue
            start, end = spans[b.name]
            try:
                rendered = b.render(loader)
            except (KeyError, IndexError, TypeError, ValueError, OSError) as e:
                problems.append(f"{doc}: block {b.name!r} cannot be rendered from its results file(s) "
                                f"{', '.join(b.sources)}: {type(e).__name__}: {e}")
                continue
            if text[start:end] != _body(rendered):
                files = ", ".join(f"benchmarks/results/{s}.json" for s in b.sources)
                problems.append(f"{doc}: block {b.name!r} differs from {files} (run benchmarks/render_docs.py --write)")
        known = {b.name for b in group}
        problems += [f"{doc}: block {n!r} has no renderer" for n in sorted(set(spans) - known)]
    return problems


def write(blocks: Iterable[Block], *, root: Path = ROOT, loader: Loader = load_results) -> list[str]:
    """Rewrite every block from its results files; the docs that changed."""
    changed: list[str] = []
    for doc, group in _by_doc(blocks).items():
        path = root / doc
        text = path.read_text()
        new = replace_blocks(text, {b.name: b.render(loader) for b in group})
        if new != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(new)
            os.replace(tmp, path)  # a doc is never left half-written
            changed.append(doc)
    return changed


# ---------------------------------------------------------------- number formats

def _finite(x: Any) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {x!r}")
    return v


def _no_minus_zero(s: str) -> str:
    return s[1:] if s.startswith("-") and float(s.rstrip(" %x")) == 0 else s


def pct(fraction: Any, digits: int = 2) -> str:
    """A fraction 0-1 as a percentage: 0.98712 -> '98.71 %'."""
    return _no_minus_zero(f"{100 * _finite(fraction):.{digits}f}") + " %"


def pp(value: Any, digits: int = 2) -> str:
    """Percentage points with a sign: -0.0700001 -> '-0.07', 0.08 -> '+0.08', 0 -> '0.00'."""
    v = round(_finite(value), digits)
    return f"{0.0:.{digits}f}" if v == 0 else f"{v:+.{digits}f}"


def spread_pp(s: dict[str, Any]) -> str:
    """A loss over seeds (``mean``, ``std``, ``values``): '+0.28 +- 0.10 pp (+0.28, +0.18, +0.38)'."""
    vals = ", ".join(f"{pp(v)}" for v in s["values"])
    return f"{pp(s['mean'])} +- {s['std']:.2f} pp ({vals})"


def over_seeds_line(seeds: dict[str, Any]) -> str:
    """One bullet: a chosen variant's test and validation loss over its training seeds
    (a ``best_variant_over_seeds`` record of benchmarks/deploy.py)."""
    per = ", ".join(f"seed {r['seed']} {pp(r['accuracy_loss_pp'])}" for r in seeds["runs"] if not r.get("error"))
    tl, vl = seeds["test_loss_pp"], seeds["val_loss_pp"]
    command = str(seeds["command"]).strip()
    return (f"- The chosen `{seeds['variant']}` over its fine-tuning seeds (`{command}`; {seeds['what']}): "
            f"test loss {pp(tl['mean'])} ± {tl['std']:.2f} pp (mean ± sd; {per}), validation loss {pp(vl['mean'])} "
            f"± {vl['std']:.2f} pp.")


def ratio(value: Any, digits: int = 2) -> str:
    """A ratio with its 'x': 55.738 -> '55.74x'."""
    return f"{_finite(value):.{digits}f}x"


def num(value: Any, digits: int = 0) -> str:
    """A number with thousands separators: 30936 -> '30,936'."""
    return f"{_finite(value):,.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def produced_by(results: str, command: str) -> str:
    """The line every generated block starts with: which command wrote which file."""
    return f"Generated from `benchmarks/results/{results}.json`, written by `{command}`."


def command_of(data: dict[str, Any], usage: str) -> str:
    """The file's own ``command`` field (top level or under ``settings``), else the benchmark's usage line."""
    for where in (data, data.get("settings")):
        if isinstance(where, dict) and isinstance(where.get("command"), str):
            return str(where["command"]).strip()
    return usage


def machine_line(data: dict[str, Any]) -> str:
    """The machine a results file was measured on, in a few words."""
    m = data.get("machine")
    if not isinstance(m, dict):
        return "machine not recorded"
    return (f"{m.get('cpus', '?')} CPUs, {m.get('torch_threads', '?')} torch thread(s), torch {m.get('torch', '?')}, "
            f"Python {m.get('python', '?')}")


def recipe(training: dict[str, Any]) -> str:
    """A training recipe as recorded in a results file: optimizer, rate, epochs, augmentation."""
    parts = [f"{str(training.get('optimizer', '?')).upper()} lr {training.get('lr', '?')}",
             f"{training.get('epochs', '?')} epochs"]
    if training.get("batch_size"):
        parts.append(f"batch {training['batch_size']}")
    if training.get("schedule"):
        parts.append(str(training["schedule"]))
    aug = []
    if training.get("augment_shift"):
        aug.append(f"shift {training['augment_shift']} px")
    if training.get("augment_rotate"):
        aug.append(f"rotation {training['augment_rotate']:g} deg")
    if training.get("augment_scale"):
        aug.append(f"scale {100 * float(training['augment_scale']):g} %")
    if training.get("augment_flip"):
        aug.append("horizontal flips")
    parts.append("augmentation " + ", ".join(aug) if aug else "no augmentation")
    return ", ".join(parts)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def recipe_difference(training: dict[str, Any], recipe_of: dict[str, Any]) -> str:
    """How a recorded training differs from a ``BASELINE_RECIPES`` entry: 'same recipe', or the differing
    settings as 'key file-value (recipe recipe-value)'. Only the recipe's own keys are compared."""
    diffs = []
    for key, want in recipe_of.items():
        if key not in training:
            diffs.append(f"{key} not recorded (recipe {want})")
        elif training[key] != want and not (isinstance(want, int | float) and isinstance(training[key], int | float)
                                            and math.isclose(float(training[key]), float(want))):
            diffs.append(f"{key} {training[key]} (recipe {want})")
    return "same recipe" if not diffs else "differs: " + ", ".join(diffs)

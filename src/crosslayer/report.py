"""``Report``: what one stage measured (metrics, tables, figures, notes) plus the config, seed and
library versions that produced it; JSON I/O and a self-contained HTML rendering (figures embedded)."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from crosslayer.errors import CrossLayerError
from crosslayer.fileio import atomic_write_json, atomic_write_text, finite_json

__all__ = ["FOLD_ROWS", "HEADLINE_KEYS", "Figure", "Report", "Table", "glance_table", "library_versions",
           "load_reports", "render_html", "write_html"]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Figure:
    """A rendered plot: PNG bytes (made by ``crosslayer.viz``) and a caption."""

    title: str
    png: bytes
    caption: str = ""


@dataclass
class Report:
    """The measured outcome of one stage."""

    stage: str
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=lambda: library_versions())
    headline: dict[str, float] = field(default_factory=dict)

    def add_table(self, title: str, columns: list[str], rows: list[list[Any]]) -> Table:
        t = Table(title, list(columns), [list(r) for r in rows])
        self.tables.append(t)
        return t

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["figures"] = [
            {"title": f.title, "caption": f.caption, "png_base64": base64.b64encode(f.png).decode("ascii")}
            for f in self.figures
        ]
        return finite_json(d)

    @classmethod
    def from_json(cls, d: Any) -> Report:
        """A report read back from JSON (a run directory is data: every field's type is checked)."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise CrossLayerError(f"stage report is malformed ({what}); re-run the flow")

        need(isinstance(d, dict), "not a JSON object")
        need(isinstance(d.get("stage"), str), "stage must be a string")
        metrics, config = d.get("metrics", {}), d.get("config", {})
        need(isinstance(metrics, dict) and isinstance(config, dict), "metrics / config must be objects")
        tables = d.get("tables", [])
        need(isinstance(tables, list) and all(
            isinstance(t, dict) and isinstance(t.get("title"), str) and isinstance(t.get("columns"), list)
            and isinstance(t.get("rows"), list) and all(isinstance(r, list) for r in t["rows"]) for t in tables),
            "tables must be {title, columns, rows} objects")
        figures = d.get("figures", [])
        need(isinstance(figures, list) and all(
            isinstance(f, dict) and isinstance(f.get("title"), str) and isinstance(f.get("png_base64"), str)
            for f in figures), "figures must be {title, png_base64} objects")
        notes = d.get("notes", [])
        need(isinstance(notes, list) and all(isinstance(n, str) for n in notes), "notes must be strings")
        seed = d.get("seed")
        need(seed is None or (isinstance(seed, int) and not isinstance(seed, bool)), "seed must be an integer")
        seconds = d.get("seconds", 0.0)
        need(isinstance(seconds, (int, float)) and not isinstance(seconds, bool), "seconds must be a number")
        headline = d.get("headline", {})
        need(isinstance(headline, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in headline.values()), "headline must map to numbers")
        versions = d.get("versions", {})
        need(isinstance(versions, dict), "versions must be an object")
        try:
            pngs = [base64.b64decode(f["png_base64"], validate=True) for f in figures]
        except ValueError as exc:
            raise CrossLayerError(f"stage report is malformed (a figure is not base64: {exc})") from exc
        return cls(stage=d["stage"], metrics=metrics,
                   tables=[Table(t["title"], list(t["columns"]), [list(r) for r in t["rows"]]) for t in tables],
                   figures=[Figure(f["title"], png, str(f.get("caption", ""))) for f, png in zip(figures, pngs,
                                                                                               strict=True)],
                   notes=list(notes), config=config, seed=seed, seconds=float(seconds),
                   versions={str(k): str(v) for k, v in versions.items()},
                   headline={str(k): float(v) for k, v in headline.items()})

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Report:
        p = Path(path)
        try:
            if p.stat().st_size > MAX_REPORT_BYTES:
                raise CrossLayerError(f"stage report {str(p)!r} is larger than {MAX_REPORT_BYTES >> 20} MiB")
            return cls.from_json(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise CrossLayerError(f"cannot read stage report {str(p)!r}: {exc}") from exc


MAX_REPORT_BYTES = 256 << 20
"""The largest stage report read back (figures are embedded, so reports can be several MiB)."""


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("crosslayer", "torch", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def load_reports(run_dir: str | Path) -> list[Report]:
    """The stage reports of a run directory, in the order the flow ran them."""
    run = Path(run_dir)
    index = run / "reports" / "index.json"
    if not index.is_file():
        raise CrossLayerError(f"{str(run)!r} is not a run directory (no reports/index.json); "
                              "run `crosslayer flow --out DIR` first")
    try:
        order = json.loads(index.read_text(encoding="utf-8"))["stages"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError) as exc:
        raise CrossLayerError(f"{str(index)!r} is malformed: {exc}") from exc
    if not isinstance(order, list) or not all(isinstance(n, str) and _STAGE_NAME.match(n) for n in order):
        raise CrossLayerError(f"{str(index)!r} is malformed: 'stages' must list plain stage names")
    return [Report.load(run / "reports" / f"{name}.json") for name in order]


_STAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}.note{color:#555;font-style:italic}
.meta{color:#777;font-size:.85em}nav a{margin-right:1em}summary{cursor:pointer;font-weight:600;margin:.6em 0}
"""

# Rendered with Jinja2's autoescape: every value from a report (which may come from a stranger's run
# directory) is HTML-escaped; only the base64 PNG data and the fixed template are emitted as they are.
_TEMPLATE = """<!doctype html><html><head><meta charset='utf-8'><title>{{ title }}</title>
<style>{{ css }}</style></head><body><h1>{{ title }}</h1>
{% if summary %}<table>{% for k, v in summary %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{% if glance %}<h2 id='glance'>The flow at a glance</h2>
<table><tr>{% for c in glance.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in glance.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% for f in glance.figures %}<img alt='{{ f.title }}' src='data:image/png;base64,{{ f.b64 }}'>
{% if f.caption %}<p class='note'>{{ f.caption }}</p>{% endif %}{% endfor %}{% endif %}
<nav>{% for r in reports %}<a href='#stage-{{ loop.index }}'>{{ r.stage }}</a>{% endfor %}</nav>
{% for r in reports %}<h2 id='stage-{{ loop.index }}'>{{ r.stage }}</h2>
<p class='meta'>{{ r.seconds }} s · seed {{ r.seed }}</p>
{% if r.metrics %}<table><tr><th>metric</th><th>value</th></tr>
{% for k, v in r.metrics %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{% for t in r.tables %}{% if t.fold %}<details><summary>{{ t.title }} ({{ t.rows|length }} rows)</summary>
{% else %}<h3>{{ t.title }}</h3>{% endif %}
<table><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if t.fold %}</details>{% endif %}{% endfor %}
{% for f in r.figures %}<h3>{{ f.title }}</h3><img alt='{{ f.title }}' src='data:image/png;base64,{{ f.b64 }}'>
{% if f.caption %}<p class='note'>{{ f.caption }}</p>{% endif %}{% endfor %}
{% for n in r.notes %}<p class='note'>{{ n }}</p>{% endfor %}
{% endfor %}</body></html>
"""

FOLD_ROWS = 12
"""Tables longer than this fold away (``<details>``) in the HTML report."""

HEADLINE_KEYS: dict[str, str] = {
    "test_accuracy": "test accuracy",
    "model_bytes": "model size (bytes)",
    "energy_uj": "energy / inference (µJ)",
    "latency_ms": "latency / inference (ms)",
    "robust_accuracy": "robust accuracy",
    "fault_drop_pp": "accuracy drop under faults (pp)",
}
"""The vocabulary of ``Report.headline``: the few figures a stage reports about the model it produced or
measured, which the report's first table compares across the flow."""


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4g}"
        return f"{v:.3e}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)[:200]
    return str(v)


def _scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None]


def glance_table(reports: list[Report]) -> tuple[list[str], list[list[str]]]:
    """The flow at a glance: one row per headline figure, its value after each stage that measured it,
    the first and the last such value side by side."""
    stages = [r for r in reports if r.headline]
    if not stages:
        return [], []
    keys = [k for k in HEADLINE_KEYS if any(k in r.headline for r in stages)]
    columns = ["figure", "first", "last", *[r.stage for r in stages]]
    rows = []
    for k in keys:
        vals = [r.headline.get(k) for r in stages]
        seen = [v for v in vals if v is not None]
        rows.append([HEADLINE_KEYS[k], _fmt(seen[0]) if seen else "", _fmt(seen[-1]) if seen else "",
                     *["" if v is None else _fmt(v) for v in vals]])
    return columns, rows


def render_html(reports: list[Report], title: str = "crosslayer report",
                summary: dict[str, Any] | None = None, glance_figures: list[Figure] | None = None) -> str:
    """One self-contained HTML page: the flow at a glance, then a section per stage (figures embedded as
    base64 PNG, long tables folded). Every value is escaped."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)

    def fig(f: Figure) -> dict[str, str]:
        return {"title": f.title, "caption": f.caption, "b64": base64.b64encode(f.png).decode("ascii")}

    columns, rows = glance_table(reports)
    glance = ({"columns": columns, "rows": rows, "figures": [fig(f) for f in glance_figures or []]}
              if rows else None)
    view = [{"stage": str(r.stage), "seconds": f"{float(r.seconds):.1f}", "seed": str(r.seed),
             "metrics": [(str(k), _fmt(v)) for k, v in _scalar_metrics(r.metrics)],
             "tables": [{"title": str(t.title), "columns": [str(c) for c in t.columns],
                         "rows": [[_fmt(c) for c in row] for row in t.rows], "fold": len(t.rows) > FOLD_ROWS}
                        for t in r.tables],
             "figures": [fig(f) for f in r.figures], "notes": [str(n) for n in r.notes]} for r in reports]
    return env.from_string(_TEMPLATE).render(
        title=title, css=_CSS, summary=[(str(k), _fmt(v)) for k, v in (summary or {}).items()], glance=glance,
        reports=view)


def write_html(path: str | Path, reports: list[Report], title: str = "crosslayer report",
               summary: dict[str, Any] | None = None, glance_figures: list[Figure] | None = None) -> Path:
    return atomic_write_text(path, render_html(reports, title, summary, glance_figures))

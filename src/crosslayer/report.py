"""``Report``: what one stage measured (metrics, tables, figures, notes) plus the config, seed and
library versions that produced it; JSON I/O and a self-contained HTML rendering (figures embedded)."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from crosslayer.errors import CrossLayerError
from crosslayer.fileio import atomic_write_json, atomic_write_text

__all__ = ["Figure", "Report", "Table", "library_versions", "load_reports", "render_html"]


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
        d["metrics"] = _finite(self.metrics)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Report:
        try:
            return cls(
                stage=d["stage"],
                metrics=d.get("metrics", {}),
                tables=[Table(**t) for t in d.get("tables", [])],
                figures=[Figure(f["title"], base64.b64decode(f["png_base64"]), f.get("caption", ""))
                         for f in d.get("figures", [])],
                notes=list(d.get("notes", [])),
                config=d.get("config", {}),
                seed=d.get("seed"),
                seconds=float(d.get("seconds", 0.0)),
                versions=d.get("versions", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CrossLayerError(f"stage report is malformed ({exc}); re-run the flow") from exc

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Report:
        p = Path(path)
        try:
            return cls.from_json(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise CrossLayerError(f"cannot read stage report {str(p)!r}: {exc}") from exc


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


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
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise CrossLayerError(f"{str(index)!r} is malformed: {exc}") from exc
    return [Report.load(run / "reports" / f"{name}.json") for name in order]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}.note{color:#555;font-style:italic}
.meta{color:#777;font-size:.85em}nav a{margin-right:1em}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4g}"
        return f"{v:.3e}"
    if isinstance(v, (dict, list)):
        return html.escape(json.dumps(v)[:200])
    return html.escape(str(v))


def _scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None]


def render_html(reports: list[Report], title: str = "crosslayer report",
                summary: dict[str, Any] | None = None) -> str:
    """One self-contained HTML page: a section per stage, figures embedded as base64 PNG."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                                         for k, v in summary.items()) + "</table>")
    parts.append("<nav>" + "".join(f"<a href='#{html.escape(r.stage)}'>{html.escape(r.stage)}</a>"
                                   for r in reports) + "</nav>")
    for r in reports:
        parts.append(f"<h2 id='{html.escape(r.stage)}'>{html.escape(r.stage)}</h2>")
        parts.append(f"<p class='meta'>{r.seconds:.1f} s · seed {r.seed}</p>")
        scal = _scalar_metrics(r.metrics)
        if scal:
            parts.append("<table><tr><th>metric</th><th>value</th></tr>" + "".join(
                f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in scal) + "</table>")
        for t in r.tables:
            parts.append(f"<h3>{html.escape(t.title)}</h3><table><tr>"
                         + "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns) + "</tr>")
            parts.extend("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in t.rows)
            parts.append("</table>")
        for f in r.figures:
            b64 = base64.b64encode(f.png).decode("ascii")
            parts.append(f"<h3>{html.escape(f.title)}</h3><img alt='{html.escape(f.title)}' "
                         f"src='data:image/png;base64,{b64}'>")
            if f.caption:
                parts.append(f"<p class='note'>{html.escape(f.caption)}</p>")
        parts.extend(f"<p class='note'>{html.escape(n)}</p>" for n in r.notes)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | Path, reports: list[Report], title: str = "crosslayer report",
               summary: dict[str, Any] | None = None) -> Path:
    return atomic_write_text(path, render_html(reports, title, summary))

"""The report opens with the flow at a glance: a table of the headline figures after each stage and a figure."""

from __future__ import annotations

from crosslayer.report import Report, glance_table, render_html
from crosslayer.viz.glance import glance_figure


def _reports() -> list[Report]:
    a = Report("baseline", headline={"test_accuracy": 0.99, "model_bytes": 1_000_000.0})
    b = Report("prune", headline={"test_accuracy": 0.985, "model_bytes": 100_000.0})
    c = Report("hardware", headline={"energy_uj": 12.5, "latency_ms": 0.4})
    d = Report("quantize", headline={"test_accuracy": 0.984, "model_bytes": 30_000.0})
    return [a, b, c, d]


def test_glance_table_compares_first_and_last_value_of_each_figure() -> None:
    columns, rows = glance_table(_reports())
    assert columns[:3] == ["figure", "first", "last"] and columns[3:] == ["baseline", "prune", "hardware", "quantize"]
    by_name = {r[0]: r for r in rows}
    assert by_name["test accuracy"][1:3] == ["0.99", "0.984"]
    assert by_name["model size (bytes)"][1:3] == ["1.000e+06", "3e+04"]
    assert by_name["energy / inference (µJ)"][1:3] == ["12.5", "12.5"]


def test_glance_comes_first_and_long_tables_fold() -> None:
    reps = _reports()
    reps[1].add_table("Steps", ["step"], [[i] for i in range(40)])
    reps[1].add_table("Short", ["x"], [[1]])
    fig = glance_figure(reps)
    assert fig is not None and fig.png.startswith(b"\x89PNG")
    html = render_html(reps, glance_figures=[fig])
    assert html.index("The flow at a glance") < html.index("id='stage-1'")
    assert "<details><summary>Steps (40 rows)</summary>" in html
    assert "<h3>Short</h3>" in html


def test_no_glance_without_headline_figures() -> None:
    html = render_html([Report("detect")])
    assert "The flow at a glance" not in html and glance_figure([Report("detect")]) is None

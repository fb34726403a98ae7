"""The figures in docs/ are generated from benchmarks/results/*.json: a doc block that disagrees with its
results file fails here (fix: `.venv/bin/python benchmarks/render_docs.py --write`)."""

from __future__ import annotations

import copy
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
docgen = importlib.import_module("_docgen")
render_docs = importlib.import_module("render_docs")


def test_every_doc_block_agrees_with_its_results_file() -> None:
    problems = docgen.check(render_docs.BLOCKS)
    assert problems == [], "\n".join(problems)


def test_every_block_names_a_results_file_and_a_command() -> None:
    for block in render_docs.BLOCKS:
        for source in block.sources:
            assert (docgen.RESULTS / f"{source}.json").is_file(), (block.name, source)
        text = block.render(docgen.load_results)
        assert "Generated from `benchmarks/results/" in text and "written by" in text, block.name


@pytest.mark.parametrize("block", render_docs.BLOCKS, ids=lambda b: f"{b.doc}:{b.name}")
def test_a_changed_figure_is_caught(block: Any, tmp_path: Path) -> None:
    """Every block quotes its file: changing the block's headline figure in its results file (a number) or removing
    it (any other value) fails the check."""
    source, path = block.headline
    assert source in block.sources
    data = copy.deepcopy(docgen.load_results(source))
    leaf = data
    for key in path[:-1]:
        leaf = leaf[key]
    if isinstance(leaf[path[-1]], float):
        leaf[path[-1]] = leaf[path[-1]] * 1.1 + 0.37
    else:
        del leaf[path[-1]]

    def load(name: str) -> dict[str, Any]:
        return data if name == source else docgen.load_results(name)

    doc = tmp_path / block.doc
    doc.parent.mkdir(parents=True)
    doc.write_text((ROOT / block.doc).read_text())
    same_doc = [b for b in render_docs.BLOCKS if b.doc == block.doc]
    assert docgen.check(same_doc, root=tmp_path) == []
    problems = docgen.check(same_doc, root=tmp_path, loader=load)
    assert any(f"block {block.name!r} differs" in p for p in problems), problems


def test_markers_are_checked() -> None:
    with pytest.raises(ValueError, match="no end marker"):
        docgen.find_blocks("<!-- results:a begin -->\nx\n")
    with pytest.raises(ValueError, match="without its begin"):
        docgen.find_blocks("<!-- results:a end -->\n")
    with pytest.raises(ValueError, match="appears twice"):
        docgen.find_blocks("<!-- results:a begin -->\n<!-- results:a end -->\n" * 2)
    text = "before\n<!-- results:a begin -->\nold\n<!-- results:a end -->\nafter\n"
    assert docgen.replace_blocks(text, {"a": "new"}) == (
        "before\n<!-- results:a begin -->\nnew\n<!-- results:a end -->\nafter\n")


def test_a_block_without_renderer_or_markers_is_reported(tmp_path: Path) -> None:
    block = docgen.Block(doc="d.md", name="x", sources=(), render=lambda load: "figure 1", headline=("", ()))
    (tmp_path / "d.md").write_text("<!-- results:y begin -->\n<!-- results:y end -->\n")
    problems = docgen.check([block], root=tmp_path)
    assert any("no block 'x'" in p for p in problems) and any("'y' has no renderer" in p for p in problems)
    assert docgen.check([block], root=tmp_path, loader=docgen.load_results) != []


def test_a_results_file_without_a_field_the_doc_needs_is_reported(tmp_path: Path) -> None:
    block = next(b for b in render_docs.BLOCKS if b.name == "deploy")
    (tmp_path / "docs").mkdir()
    (tmp_path / block.doc).write_text((ROOT / block.doc).read_text())
    data = {k: v for k, v in docgen.load_results("deploy").items() if k != "variants"}
    problems = docgen.check([block], root=tmp_path, loader=lambda name: data)
    rendered = [p for p in problems if "'deploy'" in p]
    assert len(rendered) == 1 and "cannot be rendered" in rendered[0] and "'variants'" in rendered[0]


def test_number_formats() -> None:
    assert docgen.pct(0.98712) == "98.71 %"
    assert docgen.pp(-0.0700000001) == "-0.07" and docgen.pp(0.08) == "+0.08" and docgen.pp(-0.001) == "0.00"
    assert docgen.ratio(55.738, 1) == "55.7x" and docgen.num(30936) == "30,936"
    assert docgen.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    with pytest.raises(ValueError):
        docgen.pct(float("nan"))


def test_recipe_difference_names_each_changed_setting() -> None:
    recipe = {"epochs": 30, "optimizer": "sgd", "lr": 0.05, "augment_shift": 2}
    assert docgen.recipe_difference({**recipe, "batch_size": 64}, recipe) == "same recipe"
    diff = docgen.recipe_difference({"epochs": 8, "optimizer": "sgd", "lr": 0.05}, recipe)
    assert diff == "differs: epochs 8 (recipe 30), augment_shift not recorded (recipe 2)"

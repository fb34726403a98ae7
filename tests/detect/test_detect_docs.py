"""docs/detect.md quotes benchmarks/results/stp.json: its results sections are rendered from that file
(`benchmarks/stp.py --write-doc`), and this test fails when the two disagree."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench_module():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_stp", ROOT / "benchmarks" / "stp.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_detect_doc_agrees_with_the_results_file() -> None:
    res = json.loads((ROOT / "benchmarks" / "results" / "stp.json").read_text())
    for key in ("full_frame", "resize", "tiles", "stp"):
        assert {"recall", "precision", "ap50", "fps", "macs_per_frame"} <= set(res[key])
    assert "stp_macs_vs_full_frame" in res and len(res["seeds"]) >= 3
    bench = _bench_module()
    assert bench.write_doc(res) == (ROOT / "docs" / "detect.md").read_text(), \
        "docs/detect.md differs from benchmarks/results/stp.json: run benchmarks/stp.py --write-doc"

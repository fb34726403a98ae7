"""The machine record every benchmark results file carries (benchmarks/_common.machine_info): enough to tell two
hosts apart when the same code times differently."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
common = importlib.import_module("_common")


def test_the_machine_record_names_the_libraries_and_the_processor() -> None:
    m = common.machine_info()
    assert m["torch"] == torch.__version__ and m["numpy"] == numpy.__version__
    assert isinstance(m["cpu"], str) and m["cpu"].strip()
    assert m["cpus"] >= 1 and m["torch_threads"] >= 1


def test_the_processor_falls_back_when_cpuinfo_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(str(self))

    monkeypatch.setattr(common.Path, "read_text", unreadable)
    monkeypatch.setattr("platform.processor", lambda: "test-cpu")
    assert common.cpu_model() == "test-cpu"

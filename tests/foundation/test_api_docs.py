"""docs/api.md's example runs as written (a user's own model through the public verbs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_api_doc_example_runs(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks, "docs/api.md has no python example"
    monkeypatch.chdir(tmp_path)  # the example writes its packed file into the working folder
    namespace: dict[str, object] = {"__name__": "api_doc_example"}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)  # the documented example, verbatim
    printed = capsys.readouterr().out.split()
    base, unpacked, file_bytes, ratio, robust, energy_ratio, latency_ms = (float(v) for v in printed[:7])
    import crosslayer as xl

    quantized, data, attacked = namespace["quantized"], namespace["data"], namespace["attacked"]
    assert 0.5 < base <= 1.0 and abs(base - unpacked) < 0.1
    assert unpacked == pytest.approx(xl.evaluate(quantized, data.test).accuracy, abs=2 / len(data.test))
    assert file_bytes == (tmp_path / "net.xlm").stat().st_size and ratio > 4
    assert robust < attacked.metrics["clean_accuracy"]
    cost, dense = namespace["cost"], namespace["dense"]
    assert 0 < energy_ratio < 1 and latency_ms == cost.latency_ms > 0 and printed[7] in ("WS", "OS", "RS", "IS")
    assert cost.cost.macs == dense.cost.macs  # the same network, costed at 4 / 8 bits instead of 16

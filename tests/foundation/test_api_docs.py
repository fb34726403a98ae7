"""docs/api.md's example runs as written (a user's own model through the public verbs)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_api_doc_example_runs(data_dir: Path, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks, "docs/api.md has no python example"
    namespace: dict[str, object] = {"__name__": "api_doc_example"}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)  # the documented example, verbatim
    printed = capsys.readouterr().out.split()
    base, quantized = float(printed[0]), float(printed[1])
    assert 0.5 < base <= 1.0 and abs(base - quantized) < 0.1

"""Atomic file writes: whole files only, and the permissions a plain open() would give."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from crosslayer.fileio import WriteError, atomic_write_json, atomic_write_text


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "run" / "metrics.json", {"accuracy": 0.99})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode   # a colleague can read a shared run directory
    assert json.loads(path.read_text()) == {"accuracy": 0.99}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "notes.txt", "old")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_directory_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(WriteError, match="is a directory"):
        atomic_write_text(tmp_path / "out", "x")

"""Hostile and malformed input, tried the way an adversary or a careless user would: every case runs the real
`crosslayer` command in its own process, under /usr/bin/time, and records the exit code, the first line of the
message, the peak resident memory and the wall time. A case passes when the command fails cleanly (exit 2, one
message, no traceback), no code from a file ran (a marker file a payload would write stays absent), and no run
directory was left mixed. Writes benchmarks/results/hostile_inputs.json.

    python benchmarks/hostile_inputs.py
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import SHARED_DATA, write_results

CLI = [sys.executable, "-m", "crosslayer.cli.main"]
PRESET = (Path(__file__).resolve().parents[1] / "src" / "crosslayer" / "hw" / "presets" / "eyeriss.toml").read_bytes()


class Payload:
    """Unpickling this writes the marker file: proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.marker), "code ran"))


@dataclass
class Case:
    klass: str
    name: str
    setup: Callable[[Path], list[str]]  # builds the input in a folder, returns the command's arguments
    expect: str  # a substring of the clean error message
    unchanged: str = ""  # a run directory (relative to the case folder) whose files must not change
    results: dict[str, Any] = field(default_factory=dict)


def _trained_run(root: Path) -> Path:
    run = root / "_trained"
    if not run.exists():
        subprocess.run([*CLI, "train", "--model", "lenet300", "--epochs", "1", "--train-limit", "300",
                        "--optimizer", "adam", "--lr", "0.002", "--out", str(run), "--json"], check=True,
                       capture_output=True)
    return run


def _copy_run(d: Path) -> Path:
    run = d / "run"
    shutil.copytree(_trained_run(d.parent), run)
    return run


def _pickled_checkpoint(d: Path) -> list[str]:
    run = _copy_run(d)
    (run / "checkpoints" / "baseline.pt").write_bytes(pickle.dumps(Payload(d / "marker")))
    return ["quantize", str(run), "--out", str(d / "out")]


def _old_format(d: Path) -> list[str]:
    old = d / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "baseline.pt").write_bytes(pickle.dumps(Payload(d / "marker")))
    (old / "config.toml").write_text('[flow]\nmodel = "lenet5"\n')
    return ["faults", str(old), "--out", str(d / "out")]


def _stage_traversal(d: Path) -> list[str]:
    return ["faults", str(_copy_run(d)), "--stage", "../../../../etc/passwd", "--out", str(d / "out")]


def _state_traversal(d: Path) -> list[str]:
    run = _copy_run(d)
    st = json.loads((run / "run.json").read_text())
    st["done"][0]["model"] = "../../../tmp/x"
    (run / "run.json").write_text(json.dumps(st))
    return ["quantize", str(run), "--out", str(d / "out")]


def _record(kind: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        run = _copy_run(d)
        rec_path = run / "checkpoints" / "baseline.json"
        rec = json.loads(rec_path.read_text())
        if kind == "kind":
            rec["layers"] = {"fc1": {"kind": "os.system", "settings": {"command": "touch marker"}}}
        elif kind == "attr":
            rec["shapes"] = {"fc1": {"forward": 1}}
        else:
            rec["shapes"] = {"fc1": {"out_features": 2 ** 40}}
        rec_path.write_text(json.dumps(rec))
        return ["quantize", str(run), "--out", str(d / "out")]
    return setup


def _html(d: Path) -> list[str]:
    run = _copy_run(d)
    p = run / "reports" / "baseline.json"
    rep = json.loads(p.read_text())
    rep["notes"] = ["<script>alert(1)</script>"]
    rep["metrics"]["<img src=x onerror=alert(1)>"] = "<script>x</script>"
    p.write_text(json.dumps(rep))
    return ["report", str(run)]


def _index(d: Path) -> list[str]:
    run = _copy_run(d)
    (run / "reports" / "index.json").write_text('{"stages": ["../../x"]}')
    return ["report", str(run)]


def _flow(text: str | bytes) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        f = d / "flow.toml"
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["flow", str(f), "--out", str(d / "out")]
    return setup


def _idx_bomb(d: Path) -> list[str]:
    data = d / "mnist"
    data.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_DATA / "mnist" / name, data / name)
    # a header announcing the 10,000 legal images, followed by 2 GB of zeros: 2 MB compressed
    with gzip.open(data / "train-images-idx3-ubyte.gz", "wb", compresslevel=9) as fh:
        fh.write(struct.pack(">IIII", 0x803, 10_000, 28, 28))
        block = bytes(1 << 20)
        for _ in range(2048):
            fh.write(block)
    return ["train", "--data-dir", str(d), "--epochs", "1", "--out", str(d / "out")]


def _idx_labels(d: Path) -> list[str]:
    data = d / "mnist"
    data.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_DATA / "mnist" / name, data / name)
    with gzip.open(data / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">II", 0x801, 10_000) + bytes([255]) * 10_000)
    return ["train", "--data-dir", str(d), "--epochs", "1", "--out", str(d / "out")]


def _idx_header(d: Path) -> list[str]:
    data = d / "mnist"
    data.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_DATA / "mnist" / name, data / name)
    with gzip.open(data / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">IIII", 0x803, 2 ** 31 - 1, 60_000, 60_000))
    return ["train", "--data-dir", str(d), "--epochs", "1", "--out", str(d / "out")]


def _npz_pickle(d: Path) -> list[str]:
    import numpy as np

    x = np.empty(4, dtype=object)
    x[:] = [Payload(d / "marker")] * 4
    np.savez(d / "evil.npz", x_train=x, y_train=np.zeros(4), x_test=x, y_test=np.zeros(4))
    return ["train", "--dataset", str(d / "evil.npz"), "--epochs", "1", "--out", str(d / "out")]


def _image_bomb(d: Path) -> list[str]:
    for split in ("train", "test"):
        (d / "imgs" / split / "a").mkdir(parents=True)
        # a well-formed PNG claiming 60,000 x 60,000 grey pixels (3.6 Gpx): 1 KB of a deflated zero stream
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
        z = zlib.compressobj(9)
        idat = z.compress(bytes(1 << 16)) + z.flush()
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
        (d / "imgs" / split / "a" / "big.png").write_bytes(png)
    return ["train", "--dataset", str(d / "imgs"), "--epochs", "1", "--out", str(d / "out")]


def _packed(kind: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        f = d / "model.xlm"
        if kind == "huge":
            with f.open("wb") as fh:
                fh.write(b"XLM\x00")
                fh.truncate(2 << 30)  # a sparse 2 GiB file
        else:
            f.write_bytes(b"XLM\x00" + os.urandom(200))
        return ["unpack", str(f)]
    return setup


def _preset(text: bytes) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        f = d / "acc.toml"
        f.write_bytes(text)
        return ["hw", "cost", "--model", "lenet5", "--accelerator", str(f), "--samples", "4"]
    return setup


def _mixed(d: Path) -> list[str]:
    run = _copy_run(d)
    return ["train", "--model", "lenet300", "--epochs", "2", "--train-limit", "300", "--out", str(run)]


def _out_is_file(d: Path) -> list[str]:
    (d / "afile").write_text("x")
    return ["quantize", str(_copy_run(d)), "--out", str(d / "afile")]


def _detect(*extra: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        return ["detect", str(SHARED_DATA / "video" / "vtest.avi"), *extra, "--max-frames", "2", "--out",
                str(d / "out")]
    return setup


def _raising_factory(d: Path) -> list[str]:
    (d / "det.py").write_text("def make():\n    raise RuntimeError('no detector today')\n")
    return _detect("--mode", "tiles", "--detector", f"{d / 'det.py'}:make")(d)


def _empty_test(d: Path) -> list[str]:
    import numpy as np

    np.savez(d / "empty.npz", x_train=np.zeros((20, 8, 8), np.uint8), y_train=np.arange(20) % 2,
             x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64))
    return ["train", "--dataset", str(d / "empty.npz"), "--epochs", "1", "--out", str(d / "out")]


CASES = [
    Case("code execution", "pickled checkpoint in a shared run directory", _pickled_checkpoint, "never loads"),
    Case("code execution", "run directory of the older, pickled format", _old_format, "pickled"),
    Case("code execution", "npz with pickled object arrays", _npz_pickle, "pickle"),
    Case("code execution", "architecture record naming os.system", _record("kind"), "unknown kind"),
    Case("path traversal", "--stage ../../../../etc/passwd", _stage_traversal, "plain name"),
    Case("path traversal", "run.json naming ../../../tmp/x", _state_traversal, "plain name"),
    Case("html injection", "script tags in a stage report", _html, ""),
    Case("malformed file", "report index naming ../../x", _index, "malformed"),
    Case("malformed file", "architecture record setting forward", _record("attr"), "only in_features"),
    Case("malformed file", "truncated packed file", _packed("truncated"), ""),
    Case("malformed file", "IDX labels out of range", _idx_labels, "label"),
    Case("malformed file", "accelerator preset that is binary", _preset(b"\xff\xfe\x00binary"), "binary file"),
    Case("numbers", "flow with lr = nan", _flow("[flow]\nstages=['baseline']\n[baseline]\nlr = nan\n"), "finite"),
    Case("numbers", "flow with batch_size = 2**63 - 1",
         _flow("[flow]\nstages=['baseline']\n[baseline]\nbatch_size = 9223372036854775807\n"), "absurdly large"),
    Case("numbers", "accelerator preset with 1e999", _preset(PRESET.replace(b"rows = 12", b"rows = 1e999")), "rows"),
    Case("unbounded resources", "2 MB gzip that expands to 2 GB (IDX)", _idx_bomb, ""),
    Case("unbounded resources", "IDX header announcing 2^31 images of 60,000^2", _idx_header, ""),
    Case("unbounded resources", "PNG header claiming 60,000 x 60,000 pixels", _image_bomb, "pixels"),
    Case("unbounded resources", "2 GiB packed file", _packed("huge"), "no legal packed file"),
    Case("unbounded resources", "detect --tile 1,000,000,000", _detect("--tile", "1000000000"), "tile"),
    Case("numbers", "detect --budget nan", _detect("--budget", "nan"), "budget"),
    Case("numbers", "packed-file index width of 99 bits",
         _flow("[flow]\nstages=['baseline','encode']\n[encode]\nfc_index_bits = 99\n"), "fc_index_bits"),
    Case("malformed file", "wrong type inside a nested table",
         _flow("[flow]\nstages=['baseline','imc']\n[imc.crossbar]\nlevels = 'many'\n"), "levels"),
    Case("careless use", "a user detector factory that raises", _raising_factory, "no detector today"),
    Case("unbounded resources", "TOML nested 500 deep", _flow("a = " + "[" * 500 + "]" * 500 + "\n"), "nest"),
    Case("unbounded resources", "6 MB TOML", _flow(b"#" * (6 << 20)), "larger than"),
    Case("malformed file", "binary flow TOML", _flow(b"\x00\xffbinary\x01"), "UTF-8"),
    Case("mixed runs", "second run with another config into the same --out", _mixed, "different config",
         unchanged="run"),
    Case("careless use", "--out names an existing file", _out_is_file, "is a file"),
    Case("careless use", "dataset with an empty test split", _empty_test, "empty"),
    Case("careless use", "stages in an order that makes no sense",
         _flow("[flow]\nstages = ['export', 'baseline']\n"), "before 'baseline'"),
]


def _snapshot(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def run_case(case: Case, root: Path) -> dict[str, Any]:
    d = root / case.name.replace(" ", "_").replace("/", "_")[:60]
    d.mkdir()
    args = case.setup(d)
    before = _snapshot(d / case.unchanged) if case.unchanged else {}
    timing = d / "time.txt"
    env = {**os.environ, "CROSSLAYER_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %e", "-o", str(timing), *CLI, *args], capture_output=True,
                          text=True, env=env, timeout=900)
    rss_kb, seconds = timing.read_text().split()[-2:]
    out = proc.stdout + proc.stderr
    first = next((ln.strip() for ln in out.splitlines() if ln.strip()), "")
    traceback = "Traceback (most recent call last)" in out
    code_ran = (d / "marker").exists()
    mixed = bool(case.unchanged) and _snapshot(d / case.unchanged) != before
    html_ok = True
    if case.klass == "html injection":
        page = (d / "run" / "report.html").read_text()
        html_ok = "<script" not in page and "<img src=x" not in page
    clean_fail = proc.returncode == 2 and not traceback and (case.expect in " ".join(out.split()))
    ok = (clean_fail or (case.klass == "html injection" and proc.returncode == 0)) and html_ok and not code_ran \
        and not mixed
    return {"class": case.klass, "input": case.name, "command": " ".join(["crosslayer", *args[:1]]),
            "exit_code": proc.returncode, "message": first[:300], "traceback": traceback, "code_executed": code_ran,
            "run_dir_changed": mixed, "html_escaped": html_ok, "peak_rss_mb": round(int(rss_kb) / 1024, 1),
            "seconds": float(seconds), "passed": ok}


def main() -> None:
    os.environ.setdefault("CROSSLAYER_DATA", str(SHARED_DATA))
    root = Path(tempfile.mkdtemp(prefix="xl-hostile-"))
    try:
        rows = []
        for case in CASES:
            r = run_case(case, root)
            rows.append(r)
            print(f"{'ok ' if r['passed'] else 'BAD'} {r['class']:<20} {r['input']:<55} exit {r['exit_code']} "
                  f"{r['peak_rss_mb']:>7.1f} MB {r['seconds']:>6.2f} s  {r['message'][:90]}")
        worst_mem = max(rows, key=lambda r: r["peak_rss_mb"])
        worst_time = max(rows, key=lambda r: r["seconds"])
        write_results("hostile_inputs", {
            "cases": rows, "passed": sum(r["passed"] for r in rows), "total": len(rows),
            "worst_peak_rss": {"input": worst_mem["input"], "peak_rss_mb": worst_mem["peak_rss_mb"]},
            "worst_time": {"input": worst_time["input"], "seconds": worst_time["seconds"]},
            "code_executed_anywhere": any(r["code_executed"] for r in rows),
            "method": "each case runs `python -m crosslayer.cli.main ...` in its own process under /usr/bin/time "
                      "(peak RSS, wall time); passed = exit 2 with the expected message and no traceback (or, for "
                      "HTML, an escaped page), no marker file written by a payload, no run directory changed"})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

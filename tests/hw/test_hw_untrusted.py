"""Accelerator files and layer shapes as untrusted input: binary / non-UTF-8 / huge / deeply nested files,
NaN, infinite, overflowing and absurd numbers each give one HardwareConfigError naming the key, and every
cost that is written to JSON stays finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from crosslayer.errors import ConfigError
from crosslayer.hw import conv, evaluate_network, linear, load_accelerator
from crosslayer.hw.accelerator import Accelerator, EnergyTable
from crosslayer.hw.errors import HardwareConfigError, MappingError
from crosslayer.hw.shapes import LayerShape

GOOD = """[accelerator]
name = "tiny"
kind = "systolic"
rows = 4
cols = 4
clock_mhz = 100.0
dataflows = ["WS", "OS", "IS"]
[memory]
rf_bytes = 8
glb_bytes = 4096
dram_bytes = 1048576
glb_bandwidth = 8.0
dram_bandwidth = 2.0
[energy]
dram = 200.0
glb = 6.0
noc = 2.0
rf = 1.0
mac = 1.0
"""


def _write(tmp_path: Path, data: bytes | str) -> Path:
    p = tmp_path / "acc.toml"
    if isinstance(data, str):
        p.write_text(data, encoding="utf-8")
    else:
        p.write_bytes(data)
    return p


@pytest.mark.parametrize(("data", "msg"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    (GOOD.replace('"tiny"', '"t\xe9"').encode("latin-1"), r"not UTF-8 text \(byte \d+\)"),
    (b"\xff\xfe" + GOOD.encode("utf-16-le"), "binary file|not UTF-8"),
    (b"[accelerator\nname = ", "not valid TOML"),
    (("x = " + "[" * 200_000 + "]" * 200_000).encode(), "nested too deeply|not valid TOML"),
    (b"#" * ((1 << 20) + 10), "larger than 1048576 bytes"),
])
def test_unreadable_accelerator_files_are_one_clear_error(tmp_path: Path, data: bytes, msg: str) -> None:
    with pytest.raises(HardwareConfigError, match=msg):
        load_accelerator(_write(tmp_path, data))


@pytest.mark.parametrize(("old", "new", "msg"), [
    ("dram = 200.0", "dram = nan", r"energy\.dram = nan must be a positive number"),
    ("glb = 6.0", "glb = inf", r"energy\.glb = inf must be a positive number"),
    ("mac = 1.0", "mac = 1e300", r"energy\.mac = 1e\+300 is out of range"),
    ("clock_mhz = 100.0", "clock_mhz = -inf", r"accelerator\.clock_mhz = -inf must be a positive number"),
    ("dram_bandwidth = 2.0", "dram_bandwidth = nan", r"memory\.dram_bandwidth = nan must be"),
    ("glb_bandwidth = 8.0", "glb_bandwidth = 1e400", r"memory\.glb_bandwidth = inf must be"),
    ("rows = 4", "rows = 99999999999999999999999", r"accelerator\.rows = 99999999999999999999999 is out of range"),
    ("cols = 4", "cols = 1e3", r"accelerator\.cols = 1000\.0 must be a positive integer"),
    ("glb_bytes = 4096", "glb_bytes = 9223372036854775807", r"memory\.glb_bytes = 9223372036854775807 is out"),
    ("rf_bytes = 8", 'rf_bytes = "8"', r"memory\.rf_bytes = '8' must be a positive integer"),
    ("clock_mhz = 100.0", "clock_mhz = 100.0\nword_bits = 0", r"accelerator\.word_bits = 0 must be a positive"),
    ("clock_mhz = 100.0", "clock_mhz = 100.0\npsum_bits = 4096", r"accelerator\.psum_bits = 4096 is out of range"),
    ('name = "tiny"', "name = 7", r"accelerator\.name = 7 must be printable text"),
    ('dataflows = ["WS", "OS", "IS"]', 'dataflows = "WS"', r"accelerator\.dataflows = 'WS' must be a list"),
    ('dataflows = ["WS", "OS", "IS"]', 'dataflows = ["WS", "WS"]', "names a dataflow twice"),
    ('dataflows = ["WS", "OS", "IS"]', "dataflows = [1]", r"accelerator\.dataflows = \(1,\) must be a list"),
    ("[energy]", "[energy.more]\nx = 1\n[energyx]", r"unknown section\(s\) energyx"),
])
def test_hostile_numbers_in_an_accelerator_file_name_the_key(tmp_path: Path, old: str, new: str, msg: str) -> None:
    assert old in GOOD
    with pytest.raises(HardwareConfigError, match=msg) as info:
        load_accelerator(_write(tmp_path, GOOD.replace(old, new, 1)))
    assert isinstance(info.value, ConfigError)          # the CLI prints it and exits 2
    assert str(tmp_path / "acc.toml") in str(info.value)


@pytest.mark.parametrize(("field", "value", "msg"), [
    ("in_channels", 1 << 40, "in_channels = 1099511627776 is out of range"),
    ("batch", 0, "batch = 0 must be a positive integer"),
    ("act_density", math.nan, "act_density = nan must lie in"),
    ("weight_density", math.inf, "weight_density = inf must lie in"),
    ("weight_bits", 1 << 20, "weight_bits = 1048576 is out of range"),
    ("padding", -1, "padding = -1 must be an integer"),
    ("filter_nnz", (5, -1), r"filter_nnz entries must lie in \[0, 4\]"),
])
def test_absurd_layer_shapes_are_refused(field: str, value: object, msg: str) -> None:
    kw: dict[str, object] = {"name": "l", "kind": "conv", "in_channels": 1, "out_channels": 2, "in_h": 4,
                             "in_w": 4, "kernel_h": 2, "kernel_w": 2, field: value}
    with pytest.raises(HardwareConfigError, match=msg):
        LayerShape(**kw)  # type: ignore[arg-type]


def test_a_layer_too_large_to_cost_is_refused_before_allocating() -> None:
    with pytest.raises(HardwareConfigError, match="operations or inputs per inference is out of range"):
        conv("huge", 1 << 16, 1 << 16, 1 << 12, 3)
    big = conv("big", 1 << 19, 1 << 19, 1, 1)                 # legal size, 2 million tile candidates
    with pytest.raises(MappingError, match="DRAM tiling candidates"):
        evaluate_network((big,), load_accelerator("tpu"))


def test_largest_legal_energies_and_layers_stay_finite_in_json() -> None:
    acc = Accelerator(name="extreme", kind="systolic", rows=4096, cols=4096, clock_mhz=1e-3, rf_bytes=1 << 24,
                      glb_bytes=1 << 40, dram_bytes=1 << 50, glb_bandwidth=1e-9, dram_bandwidth=1e-9,
                      energy=EnergyTable(dram=1e12, glb=1e12, noc=1e12, rf=1e12, mac=1e12), word_bits=1,
                      psum_bits=64, reference_bits=1, dataflows=("WS", "OS", "IS"))
    wl = (conv("c", 4096, 4096, 64, 3, padding=1, weight_bits=64, act_bits=64),
          linear("f", 1 << 18, 1 << 14, weight_bits=64, act_bits=64))
    nc = evaluate_network(wl, acc)
    text = json.dumps({"energy": nc.energy("best"), "latency_s": nc.latency_s("best"), "cycles": nc.cycles("best")},
                      allow_nan=False)
    assert "Infinity" not in text and math.isfinite(nc.energy("best")) and nc.cycles("best") > 0


def test_relative_power_from_a_file_is_bounded() -> None:
    acc = load_accelerator("tpu")
    for bad in (math.nan, math.inf, 1e308, -1.0):
        with pytest.raises(HardwareConfigError, match="relative_power"):
            evaluate_network((linear("f", 8, 8),), acc, relative_power={"f": bad})


def test_cli_reports_a_binary_accelerator_file_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crosslayer.cli.main import app

    bad = _write(tmp_path, b"\x7fELF\x02\x01\x01\x00\x00\x00")
    res = CliRunner().invoke(app, ["hw", "cost", "-a", str(bad)])
    assert res.exit_code == 2
    assert "binary file" in res.output and "Traceback" not in res.output

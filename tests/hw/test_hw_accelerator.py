"""Accelerator TOML, presets, MAC energy scaling and the errors of a bad description."""

from __future__ import annotations

from pathlib import Path

import pytest

from crosslayer.hw.accelerator import accelerator_from_mapping, load_accelerator, mac_energy, preset_names
from crosslayer.hw.errors import HardwareConfigError

GOOD = """
[accelerator]
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


def test_presets_load_with_eyeriss_energies() -> None:
    assert preset_names() == ["eyeriss", "tpu"]
    ey = load_accelerator("eyeriss")
    assert (ey.rows, ey.cols, ey.kind, ey.glb_bytes) == (12, 14, "spatial", 110592)
    assert (ey.energy.dram, ey.energy.glb, ey.energy.noc, ey.energy.rf, ey.energy.mac) == (200, 6, 2, 1, 1)
    assert "RS" in ey.dataflows
    tpu = load_accelerator("tpu")
    assert tpu.kind == "systolic" and set(tpu.dataflows) == {"WS", "OS", "IS"}


def test_toml_file_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "tiny.toml"
    p.write_text(GOOD)
    acc = load_accelerator(p)
    assert acc.name == "tiny" and acc.pes == 16 and acc.rf_words == 4


def test_missing_energy_entry_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(GOOD.replace("glb = 6.0\n", ""))
    with pytest.raises(HardwareConfigError, match=r"energy entry energy\.glb is missing"):
        load_accelerator(p)


@pytest.mark.parametrize(("old", "new", "msg"), [
    ("rows = 4", "rows = 0", "rows = 0 must be a positive integer"),
    ("glb_bytes = 4096", "glb_bytes = -1", "glb_bytes = -1 must be a positive integer"),
    ('dataflows = ["WS", "OS", "IS"]', 'dataflows = ["WS", "XY"]', "dataflow 'XY' is unknown; allowed: WS, OS, RS, IS"),
    ('dataflows = ["WS", "OS", "IS"]', 'dataflows = ["RS"]', "'RS' needs kind = 'spatial'"),
    ("dram = 200.0", "dram = 0.0", "energy.dram = 0.0 must be a positive number"),
    ('kind = "systolic"', 'kind = "magic"', "accelerator.kind = 'magic' is unknown"),
])
def test_bad_fields_are_named(tmp_path: Path, old: str, new: str, msg: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(GOOD.replace(old, new))
    with pytest.raises(HardwareConfigError, match=msg):
        load_accelerator(p)


def test_unknown_key_and_missing_file() -> None:
    import tomllib

    doc = tomllib.loads(GOOD)
    doc["memory"]["l3_bytes"] = 1
    with pytest.raises(HardwareConfigError, match=r"unknown key\(s\) memory.l3_bytes"):
        accelerator_from_mapping(doc)
    with pytest.raises(HardwareConfigError, match="neither a preset"):
        load_accelerator("/nonexistent/acc.toml")


def test_mac_energy_quadratic_in_bits_and_linear_in_multiplier_power() -> None:
    acc = load_accelerator("eyeriss")
    assert mac_energy(acc, 16, 16) == pytest.approx(1.0)
    assert mac_energy(acc, 8, 8) == pytest.approx(0.25)
    assert mac_energy(acc, 32, 32) == pytest.approx(4.0)
    assert mac_energy(acc, 8, 8, relative_power=0.6) == pytest.approx(0.15)
    with pytest.raises(HardwareConfigError, match="relative_power"):
        mac_energy(acc, 8, 8, relative_power=0.0)

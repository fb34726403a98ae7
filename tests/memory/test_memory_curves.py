"""BER-vs-voltage curves: the published KC705-B points, the probit fit, user tables and bad input."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from crosslayer.errors import ConfigError, DataError
from crosslayer.memory import builtin_curve, load_curve, probit_fit, resolve_curve
from crosslayer.memory.curves import check_voltage

BITS = 445 * 1024 * 32  # the KC705-B dumps: 445 BRAMs of 1024 x 32 data bits


def test_kc705b_table_reproduces_the_published_counts() -> None:
    c = builtin_curve("kc705b-28nm")
    assert c.ber(0.53) == pytest.approx(2274 / BITS) and c.ber(0.59) == pytest.approx(2 / BITS)
    assert c.ber(0.55) == pytest.approx(252 / BITS)
    # log-linear between rows, zero from the reported guardband (0.61 V) up, linear to zero in between
    assert c.ber(0.535) == pytest.approx(math.sqrt(2274 * 690) / BITS)
    assert c.ber(0.61) == 0.0 and c.ber(0.8) == 0.0 and c.ber(1.0) == 0.0
    assert c.ber(0.60) == pytest.approx(0.5 * 2 / BITS)
    grid = c.default_grid()
    assert grid[0] == 1.0 and list(grid) == sorted(grid, reverse=True) and min(grid) == 0.53
    bers = c.bers_at(grid)
    assert all(a <= b for a, b in itertools.pairwise(bers))  # never more errors at a higher voltage
    assert c.fault_mode == "stuck0" and "28 nm" in c.node and "Salami" in c.source
    with pytest.raises(ConfigError, match=r"outside curve 'kc705b-28nm'.*\[0.53, 1\]"):
        c.ber(0.52)  # below the FPGA's crash voltage


def test_probit_fit_recovers_a_known_law_and_tracks_the_data() -> None:
    from statistics import NormalDist

    vs = [0.50, 0.52, 0.55, 0.58]
    bers = [NormalDist().cdf((0.40 - v) / 0.035) for v in vs]
    mu, sigma = probit_fit(vs, bers)
    assert mu == pytest.approx(0.40, abs=1e-9) and sigma == pytest.approx(0.035, rel=1e-9)
    p, t = builtin_curve("kc705b-28nm-probit"), builtin_curve("kc705b-28nm")
    for v in (0.53, 0.55, 0.57, 0.59):  # within a factor 3 of every measured point
        assert abs(math.log10(p.ber(v) / t.ber(v))) < 0.5
    assert p.ber(0.44) > 0.05 and p.ber(0.40) < 0.5 and p.floor_v == 0.40
    grid = p.default_grid()
    assert grid[0] == 1.0 and len(grid) >= 10 and min(grid) >= 0.40
    with pytest.raises(DataError, match="at least two rows"):
        probit_fit([0.5, 0.6], [0.0, 0.0])


def test_user_table_with_header_and_comments(tmp_path: Path) -> None:
    f = tmp_path / "sram.csv"
    f.write_text("# my 22 nm macro\nvoltage, ber\n0.45, 1e-2\n0.50, 1e-4\n0.60, 0\n0.80, 0  # nominal\n")
    c = load_curve(f, node="22 nm")
    assert (c.nominal_v, c.floor_v, c.node, c.name) == (0.80, 0.45, "22 nm", "sram")
    assert c.ber(0.475) == pytest.approx(1e-3) and c.ber(0.55) == pytest.approx(0.5e-4) and c.ber(0.7) == 0.0
    assert resolve_curve(str(f), fault_mode="flip").fault_mode == "flip"


@pytest.mark.parametrize(("text", "message"), [
    ("0.5, 1e-3\n0.45, 1e-2\n", "strictly increasing"),
    ("0.45, 1e-3\n0.5, 1e-2\n", "rises with the voltage"),
    ("0.45, 1e-3\n0.45, 1e-4\n", "strictly increasing"),
    ("0.45, 2.0\n0.5, 0\n", "not a rate"),
    ("0.45, nan\n0.5, 0\n", "not a rate"),
    ("nan, 1e-3\n0.5, 0\n", "not a finite positive"),
    ("0.45, 1e-3, 7\n0.5, 0\n", "line 1: expected 'voltage, ber'"),
    ("0.45, 1e-3\n0.5, abc\n", "line 2: not a number"),
    ("0.45, 1e-3\n", "at least two"),
])
def test_malformed_user_tables_are_refused(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(DataError, match=message):
        load_curve(f)


def test_bad_voltages_and_names() -> None:
    c = builtin_curve("kc705b-28nm-probit")
    for bad in (float("nan"), float("inf"), -0.5, 0.0, True):
        with pytest.raises(ConfigError, match="not a voltage"):
            c.ber(bad)
    with pytest.raises(ConfigError, match="outside"):
        c.ber(1.2)
    with pytest.raises(ConfigError, match="unknown BER curve 'sram9'.*kc705b-28nm"):
        resolve_curve("sram9")
    with pytest.raises(DataError, match="does not exist"):
        resolve_curve("missing/table.csv")
    assert check_voltage(0.5) == 0.5


def test_table_without_a_fault_free_row_refuses_higher_voltages(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("0.4, 1e-2\n0.5, 1e-4\n")
    c = load_curve(f)
    assert c.nominal_v == 0.5 and c.ber(0.5) == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="above the table's last row"):
        load_curve(f, nominal_v=0.9)

"""Truth-table files (every accepted form, every rejected form) and the error metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crosslayer.approx import Multiplier, error_metrics, get_multiplier, load_table, save_table, uniform_metrics
from crosslayer.errors import DataError


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".txt"])
def test_save_load_roundtrip(tmp_path: Path, suffix: str) -> None:
    m = get_multiplier("drum4")
    path = save_table(tmp_path / f"t{suffix}", m)
    back = load_table(path, relative_power=0.4)
    assert np.array_equal(back.table, m.table) and not back.signed
    assert back.relative_power == 0.4 and back.name == "t"
    assert load_table(path).source.startswith("unknown")


def test_single_column_and_triples_forms(tmp_path: Path) -> None:
    m = get_multiplier("mitchell")
    col = tmp_path / "col.txt"
    col.write_text("# one product per line\n" + "\n".join(str(v) for v in m.table.ravel()) + "\n")
    assert np.array_equal(load_table(col).table, m.table)
    v = np.arange(-128, 128)
    w, a = np.meshgrid(v, v, indexing="ij")
    prod = get_multiplier("trunc6")(w, a)
    trip = tmp_path / "evo.csv"
    rows = np.stack([a.ravel(), w.ravel(), prod.T.ravel()], 1)[::-1]  # any order, columns: a, b, product
    trip.write_text("\n".join(f"{x},{y},{p}" for x, y, p in rows))
    signed = load_table(trip)
    assert signed.signed and signed.lo == -128
    assert np.array_equal(signed(w, a), prod) and signed(-128, -128) == prod[0, 0]


@pytest.mark.parametrize(("content", "message"), [
    ("1,2,3\n4,5,6\n", "shape"),
    ("1,2\n3\n", "different numbers of values"),
    ("1,x\n", "not a number"),
])
def test_malformed_text_tables(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        load_table(p)


def test_rejected_arrays_and_files(tmp_path: Path) -> None:
    cases = {"small.npy": np.zeros((255, 256)), "frac.npy": np.full((256, 256), 0.5),
             "nan.npy": np.full((256, 256), np.nan), "huge.npy": np.full((256, 256), 1 << 20)}
    messages = {"small.npy": "shape", "frac.npy": "integers", "nan.npy": "NaN", "huge.npy": "2\\^17"}
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(DataError, match=messages[name]):
            load_table(tmp_path / name)
    with pytest.raises(DataError, match="does not exist"):
        load_table(tmp_path / "missing.npy")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported extension"):
        load_table(tmp_path / "t.json")
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable"):
        load_table(tmp_path / "garbage.npy")
    dup = tmp_path / "dup.txt"
    dup.write_text("\n".join("0 0 0" for _ in range(65536)))
    with pytest.raises(DataError, match="exactly once"):
        load_table(dup)


def test_signed_table_rejects_unsigned_operands() -> None:
    m = Multiplier(name="s", table=get_multiplier("exact").table, signed=True)
    with pytest.raises(Exception, match=r"\[-128, 127\]"):
        m.product_table((-128, 127), (0, 255))


def test_uniform_metrics_of_known_designs() -> None:
    ex = uniform_metrics(get_multiplier("exact"))
    assert ex.med == ex.wce == ex.error_rate == ex.bias == 0.0
    pp = uniform_metrics(get_multiplier("ppp0_1"))  # error = -a * b_0
    assert pp.med == pytest.approx(127.5 * 0.5) and pp.bias == pytest.approx(-pp.med)
    assert pp.wce == 255 and pp.error_rate == pytest.approx(0.5 * 255 / 256)
    mit = uniform_metrics(get_multiplier("mitchell"))
    assert 0.035 < mit.mred < 0.04  # Mitchell's well-known ~3.8 % mean relative error


def test_layer_distribution_weights_the_metrics() -> None:
    m = get_multiplier("trunc4")
    # All mass on the pair (15, 15): error of that one pair.
    only = error_metrics(m, np.array([15, 1]), np.array([15, 2]), np.array([1.0, 0.0]), np.array([1.0, 0.0]))
    assert only.med == abs(m(15, 15) - 225) and only.wce == only.med and only.error_rate == 1.0
    small = error_metrics(m, np.arange(0, 4), np.arange(0, 4))
    assert small.med < uniform_metrics(m).med
    with pytest.raises(Exception, match="match"):
        error_metrics(m, np.arange(3), np.arange(3), np.ones(2))

"""The config loader under hostile input: any bytes, any TOML structure, any number. The only outcomes
allowed are a validated config or one ``ConfigError``; every accepted number is finite and sane."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crosslayer.config import MAX_INT, Config, from_mapping, parse_toml
from crosslayer.errors import ConfigError
from crosslayer.flow import FlowConfig, available_stages, load_flow_config
from crosslayer.train import TrainConfig

STAGES = available_stages()
CONFIG_CLASSES = [FlowConfig, *(s.config_cls for s in STAGES.values())]

numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 2**63 - 1, float("nan"), float("inf"), -float("inf"), 1e308]))
scalars = st.one_of(numbers, st.booleans(), st.text(max_size=12), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _all_numbers(obj: Any) -> list[Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [n for f in dataclasses.fields(obj) for n in _all_numbers(getattr(obj, f.name))]
    if isinstance(obj, (list, tuple)):
        return [n for v in obj for n in _all_numbers(v)]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _all_numbers(v)]
    return [obj] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_clearly(raw: bytes) -> None:
    with contextlib.suppress(ConfigError):
        parse_toml(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(CONFIG_CLASSES), data=st.data())
def test_any_values_build_a_sane_config_or_fail_clearly(cls: type, data: st.DataObject) -> None:
    names = _field_names(cls)
    keys = st.one_of(st.sampled_from(names), st.text(max_size=6)) if names else st.text(max_size=6)
    doc = data.draw(st.dictionaries(keys, values, max_size=4))
    try:
        cfg = from_mapping(cls, doc, section="x")
    except ConfigError:
        return
    for n in _all_numbers(cfg):
        assert not isinstance(n, float) or math.isfinite(n), (cls.__name__, doc)
        assert abs(n) <= MAX_INT, (cls.__name__, doc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(sorted(STAGES)), key=st.text(max_size=10), value=values)
def test_any_flow_file_loads_or_fails_clearly(tmp_path_factory: pytest.TempPathFactory, section: str, key: str,
                                              value: Any) -> None:
    doc: dict[str, Any] = {"flow": {"stages": ["baseline", section] if section != "baseline" else ["baseline"]}}
    if value is not None:
        doc[section] = {key: value}
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return  # not expressible in TOML (e.g. NaN keys); the loader never sees it
    path = tmp_path_factory.mktemp("fuzz") / "flow.toml"
    path.write_text(text)
    with contextlib.suppress(ConfigError):
        load_flow_config(path)


@pytest.mark.parametrize(("text", "message"), [
    ("[baseline]\nlr = nan\n", "lr = nan is not a finite number"),
    ("[baseline]\nlr = inf\n", "lr = inf is not a finite number"),
    ("[baseline]\nbatch_size = 9223372036854775807\n", "absurdly large"),
    ("[baseline]\nbatch_size = 100000000\n", "batch_size = 100000000 is out of range"),
    ("[baseline]\nepochs = 100000000\n", "epochs = 100000000 is out of range"),
    ("[flow]\nseed = -3\n", "flow.seed = -3 is out of range"),
    ("[imc]\ncrossbar = 5\n", "crossbar must be a table"),
    ("[imc.crossbar]\nrows = 'x'\n", "[imc] crossbar.rows must be an integer"),
    ("baseline = 3\n[flow]\nstages = ['baseline']\n", "[baseline] must be a table"),
    ("a = " + "[" * 40 + "]" * 40 + "\n", "nest"),
])
def test_flow_numbers_and_structure_are_validated(tmp_path: Any, text: str, message: str) -> None:
    path = tmp_path / "flow.toml"
    path.write_text(text if "[flow]" in text else "[flow]\nstages = ['baseline', 'imc']\n" + text)
    with pytest.raises(ConfigError) as err:
        load_flow_config(path)
    assert message in str(err.value)


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00\x01binary", b"[flow]\nmodel = 'a\x00b'\n", b"x" * (5 << 20)])
def test_binary_or_oversized_config_files_are_refused(tmp_path: Any, raw: bytes) -> None:
    path = tmp_path / "flow.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError):
        load_flow_config(path)


def test_every_config_validates_when_constructed() -> None:
    # configs built in Python (not from TOML) are checked too
    with pytest.raises(ConfigError, match="lr = nan"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=2**40)
    unchecked = [c.__name__ for c in CONFIG_CLASSES if not issubclass(c, Config)]
    assert unchecked == [], f"configs that do not validate when constructed: {unchecked}"

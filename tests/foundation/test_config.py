from dataclasses import dataclass
from typing import Literal

import pytest

from crosslayer.config import check_range, from_mapping, load_toml
from crosslayer.errors import ConfigError
from crosslayer.flow import load_flow_config


@dataclass(frozen=True, kw_only=True)
class Demo:
    n: int = 1
    x: float = 0.5
    mode: Literal["a", "b"] = "a"
    layers: tuple[str, ...] = ()
    flag: bool = False


def test_from_mapping_coerces_and_validates():
    d = from_mapping(Demo, {"n": 3, "x": 2, "mode": "b", "layers": ["fc1"], "flag": True})
    assert d == Demo(n=3, x=2.0, mode="b", layers=("fc1",), flag=True)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'nn'; allowed: flag, layers, mode, n, x"):
        from_mapping(Demo, {"nn": 1})
    with pytest.raises(ConfigError, match="mode = 'c' is not allowed; choose one of 'a', 'b'"):
        from_mapping(Demo, {"mode": "c"})
    with pytest.raises(ConfigError, match="n must be an integer"):
        from_mapping(Demo, {"n": "3"})
    with pytest.raises(ConfigError, match="flag must be true or false"):
        from_mapping(Demo, {"flag": 1})


@dataclass(frozen=True, kw_only=True)
class Fixed:
    size: tuple[int, int] = (1, 1)
    anchors: tuple[tuple[float, int, int], ...] = ()


def test_fixed_length_tuples_coerce_each_item_with_its_own_type():
    d = from_mapping(Fixed, {"size": [320, 240], "anchors": [[0.5, 8, 4], [0, 6, 8]]})
    assert d == Fixed(size=(320, 240), anchors=((0.5, 8, 4), (0.0, 6, 8)))
    assert isinstance(d.anchors[1][0], float)
    with pytest.raises(ConfigError, match=r"size must have 2 items, got 3"):
        from_mapping(Fixed, {"size": [1, 2, 3]})
    with pytest.raises(ConfigError, match=r"anchors\[0\]\[1\] must be an integer, got 8.5"):
        from_mapping(Fixed, {"anchors": [[0.5, 8.5, 4]]})


def test_check_range_message():
    with pytest.raises(ConfigError, match=r"budget = -1 is out of range; allowed \[0, 100\]"):
        check_range("budget", -1, 0, 100)
    check_range("budget", 0, 0, 100)


def test_malformed_toml_and_unknown_stage(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[flow\nmodel = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "none.toml")
    f = tmp_path / "f.toml"
    f.write_text('[flow]\nstages = ["baseline", "teleport"]\n')
    with pytest.raises(ConfigError, match="unknown stage.*'teleport'.*allowed: .*baseline"):
        load_flow_config(f)
    f.write_text('[flow]\nstages = ["baseline"]\n[baseline]\nepochz = 3\n')
    with pytest.raises(ConfigError, match=r"\[baseline\] unknown option\(s\) 'epochz'"):
        load_flow_config(f)
    f.write_text('[flow]\nstages = ["baseline"]\n[warp]\n')
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \[warp\]"):
        load_flow_config(f)
    f.write_text('[flow]\nstages = ["baseline"]\n[baseline]\nepochs = -2\n')
    with pytest.raises(ConfigError, match="epochs = -2 is out of range"):
        load_flow_config(f)
    f.write_text('[flow]\nstages = ["baseline"]\n[prune]\nbudget_pp = -1\n')
    with pytest.raises(ConfigError, match="budget_pp = -1.0 is out of range"):
        load_flow_config(f)  # a section of a stage that is not run is validated too


def test_default_flow_resolves():
    resolved = load_flow_config()
    assert resolved.flow.model == "lenet5"
    assert resolved.flow.stages[0] == "baseline"
    assert "epochs" in resolved.to_toml()

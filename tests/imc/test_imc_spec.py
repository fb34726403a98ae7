"""CrossbarSpec validation: bad input gives a ConfigError naming the field."""

from __future__ import annotations

import pytest

from crosslayer.config import from_mapping
from crosslayer.errors import ConfigError
from crosslayer.imc import AwareTrainConfig, CrossbarSpec
from crosslayer.imc.stage import ImcConfig


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"g_min": 25.0, "g_max": 25.0}, "g_min"),
    ({"g_min": 30.0, "g_max": 25.0}, "g_min"),
    ({"g_min": -1.0}, "g_min"),
    ({"levels": 0}, "levels"),
    ({"levels": 1}, "levels"),
    ({"rows": 0}, "rows"),
    ({"cols": 0}, "cols"),
    ({"d2d_sigma": -0.1}, "d2d_sigma"),
    ({"c2c_sigma": -0.1}, "c2c_sigma"),
    ({"stuck_on_rate": 1.5}, "stuck_on_rate"),
    ({"stuck_on_rate": 0.6, "stuck_off_rate": 0.6}, "exceeds 1"),
    ({"adc_bits": 1}, "adc_bits"),
    ({"dac_bits": -2}, "dac_bits"),
    ({"drift_time": 0.0}, "drift_time"),
    ({"variation": "uniform"}, "variation"),
])
def test_bad_spec_raises_config_error(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        CrossbarSpec(**kwargs)


def test_spec_from_toml_mapping_and_sigma() -> None:
    spec = from_mapping(CrossbarSpec, {"d2d_sigma": 0.3, "c2c_sigma": 0.4, "levels": 4}, section="imc.crossbar")
    assert spec.levels == 4
    assert spec.sigma == pytest.approx(0.5)
    assert not spec.has_drift
    assert spec.replace(drift_nu=0.05, drift_time=100.0).has_drift
    with pytest.raises(ConfigError, match="levels"):
        spec.replace(levels=0)


def test_stage_config_nested_errors() -> None:
    with pytest.raises(ConfigError, match="g_min"):
        from_mapping(ImcConfig, {"crossbar": {"g_min": 5.0, "g_max": 1.0}}, section="imc")
    with pytest.raises(ConfigError, match="sigmas"):
        from_mapping(ImcConfig, {"sigmas": [-0.2]}, section="imc")
    with pytest.raises(ConfigError, match="unknown"):
        from_mapping(ImcConfig, {"crossbar": {"levles": 4}}, section="imc")
    with pytest.raises(ConfigError, match="epochs"):
        AwareTrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="augment_shift"):
        AwareTrainConfig(augment_shift=9)
    with pytest.raises(ConfigError, match="augment_rotate"):
        from_mapping(ImcConfig, {"aware_augment_rotate": -5.0}, section="imc")
    cfg = from_mapping(ImcConfig, {"aware_augment_shift": 2, "aware_augment_scale": 0.1}, section="imc")
    assert (cfg.aware_config().augment_shift, cfg.aware_config().augment_scale) == (2, 0.1)

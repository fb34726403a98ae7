"""Statistical fault injection sample sizes (Leveugle 2009) and confidence intervals."""

from __future__ import annotations

import math

import pytest

from crosslayer.errors import ConfigError
from crosslayer.resilience.stats import leveugle_sample_size, mean_interval, wilson_interval, z_value


def test_leveugle_sample_size() -> None:
    # infinite-population limit: t^2 p(1-p) / e^2 = 1.96^2 * 0.25 / 0.05^2 = 384.15 -> 385
    assert leveugle_sample_size(10**12, 0.05, 0.95) == 385
    n = 431080 * 8
    expected = n / (1 + 0.01**2 * (n - 1) / (z_value(0.99) ** 2 * 0.25))
    assert leveugle_sample_size(n, 0.01, 0.99) == math.ceil(expected)
    assert leveugle_sample_size(100, 0.05, 0.95) <= 100
    assert leveugle_sample_size(10**6, 0.01, 0.95) > leveugle_sample_size(10**6, 0.05, 0.95)
    with pytest.raises(ConfigError, match="margin"):
        leveugle_sample_size(100, 0.0, 0.95)
    with pytest.raises(ConfigError, match="confidence"):
        leveugle_sample_size(100, 0.05, 1.0)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(0, 10, 0.95)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10, 0.95)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0


def test_mean_interval() -> None:
    m, lo, hi = mean_interval([1.0, 2.0, 3.0], 0.95)
    assert m == 2.0 and m - lo == pytest.approx(hi - m)
    assert hi - m == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) = 4.3027
    assert mean_interval([4.0]) == (4.0, 4.0, 4.0)


def test_mean_interval_of_two_trials_stays_within_what_a_drop_can_be() -> None:
    from crosslayer.resilience.stats import DROP_BOUNDS_PP

    m, lo, hi = mean_interval([0.0, 60.0], 0.95)  # Student t with 1 degree of freedom: 12.7 standard errors
    assert (m, round(lo), round(hi)) == (30.0, -351, 411)
    m, lo, hi = mean_interval([0.0, 60.0], 0.95, DROP_BOUNDS_PP)
    assert (m, lo, hi) == (30.0, -100.0, 100.0)
    assert mean_interval([1.0, 2.0, 3.0], 0.95, DROP_BOUNDS_PP) == mean_interval([1.0, 2.0, 3.0], 0.95)

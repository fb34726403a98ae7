"""Statistics of fault-injection campaigns.

* Sample size of statistical fault injection (Leveugle et al., "Statistical fault injection:
  quantified error and confidence", DATE 2009): ``n = N / (1 + e^2 (N - 1) / (t^2 p (1 - p)))`` for a
  population of ``N`` possible faults, error margin ``e``, confidence quantile ``t`` and the expected
  proportion ``p`` (0.5 is the conservative worst case).
* Wilson score interval of a proportion (Wilson, JASA 1927), well-behaved at 0 and 1.
* Normal / Student-t interval of a mean.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from scipy import stats as sps

from crosslayer.config import check_range

DROP_BOUNDS_PP = (-100.0, 100.0)  # an accuracy drop in percentage points

__all__ = ["DROP_BOUNDS_PP", "leveugle_sample_size", "mean_interval", "wilson_interval", "z_value"]


def z_value(confidence: float) -> float:
    """Two-sided standard-normal quantile ``t`` of a confidence level (0.95 -> 1.96)."""
    check_range("confidence", confidence, 0.0, 1.0, lo_open=True, hi_open=True)
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def leveugle_sample_size(population: int, margin: float, confidence: float, p: float = 0.5) -> int:
    """Number of faults to inject out of ``population`` for error ``margin`` at ``confidence`` (Leveugle 2009)."""
    check_range("population", population, 1)
    check_range("margin", margin, 0.0, 1.0, lo_open=True, hi_open=True)
    check_range("p", p, 0.0, 1.0, lo_open=True, hi_open=True)
    t = z_value(confidence)
    n = population / (1 + margin**2 * (population - 1) / (t**2 * p * (1 - p)))
    return min(population, math.ceil(n))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n``."""
    if n <= 0:
        return (0.0, 1.0)
    z = z_value(confidence)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def mean_interval(values: torch.Tensor | list[float], confidence: float = 0.95,
                  bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float]:
    """Mean and its two-sided interval (Student t; a single value gives a zero-width interval), clipped to
    ``bounds``, the range the quantity can take (with two or three values Student's t is so wide that an
    accuracy drop's interval would otherwise reach far beyond +-100 pp)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() == 0:
        return (math.nan, math.nan, math.nan)
    m = float(v.mean())
    if v.numel() == 1:
        return (m, m, m)
    z_value(confidence)  # validates the level
    t = float(sps.t.ppf(0.5 + confidence / 2, df=v.numel() - 1))
    half = t * float(v.std(unbiased=True)) / math.sqrt(v.numel())
    return (m, max(bounds[0], m - half), min(bounds[1], m + half))

"""The crossbar description shared by inference, variation-aware training and the cost model.

One frozen spec holds the device (conductance window and levels), the array (tile size), the
non-idealities (programming variation, stuck-at devices, drift) and the converters (DAC / ADC bits).
Defaults follow the ReRAM accelerators the survey cites: 128 x 128 tiles and 8-bit ADCs as in ISAAC
(Shafiee et al., ISCA 2016), multi-level cells as in PRIME (Chi et al., ISCA 2016), and log-normal
device variation ``G = G0 * exp(theta), theta ~ N(0, sigma^2)`` as in Long et al., "Design of
Reliable DNN Accelerator with Un-reliable ReRAM", DATE 2019. Conductances are in microsiemens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError

__all__ = ["CrossbarSpec"]

Variation = Literal["gaussian", "lognormal"]


@dataclass(frozen=True, kw_only=True)
class CrossbarSpec(Config):
    """A ReRAM crossbar with its non-idealities.

    Mapping: each weight is a differential pair ``w ~ (G+ - G-)``, both conductances in
    ``[g_min, g_max]`` on ``levels`` evenly spaced values; a layer's largest ``|w|`` maps to the full
    window. Matrices are cut into ``rows x cols`` tiles (a pair takes two columns).

    Variation (``variation``): ``"lognormal"`` multiplies each conductance by ``exp(N(0, sigma^2))``
    (Long et al. 2019); ``"gaussian"`` adds ``N(0, (sigma * (g_max - g_min))^2)`` (programming noise
    relative to the window, as aihwkit's programming-noise models do). ``d2d_sigma`` is the
    device-to-device part, fixed for a chip (its seed); ``c2c_sigma`` the cycle-to-cycle part, drawn
    anew each time the array is programmed. Stuck-at-on devices read ``g_max``, stuck-off ``g_min``.

    Converters: inputs are scaled by their absolute maximum and coded by a signed ``dac_bits`` DAC;
    each tile's partial sums are digitised by a signed ``adc_bits`` ADC over ``+-adc_full_scale``
    (in units of "normalised input x normalised weight"; 0 = calibrated from data, see
    :func:`crosslayer.imc.crossbar.to_crossbar`). 0 bits means an ideal converter.

    Drift: ``G(t) = G(t0) * (t / t0)^-nu`` with ``nu ~ N(drift_nu, drift_nu_std^2)`` per device
    (the power law of PCM / ReRAM retention); ``drift_compensation`` rescales each layer's output
    by the ratio of mean programmed to mean drifted conductance (a global, per-layer calibration).
    """

    g_min: float = 1.0
    g_max: float = 25.0
    levels: int = 16
    rows: int = 128
    cols: int = 128
    variation: Variation = "lognormal"
    d2d_sigma: float = 0.0
    c2c_sigma: float = 0.0
    stuck_on_rate: float = 0.0
    stuck_off_rate: float = 0.0
    dac_bits: int = 8
    adc_bits: int = 8
    adc_full_scale: float = 0.0
    adc_headroom: float = 1.0
    drift_nu: float = 0.0
    drift_nu_std: float = 0.0
    drift_time: float = 1.0
    drift_t0: float = 1.0
    drift_compensation: bool = True

    def validate(self) -> None:
        check_range("g_min", self.g_min, 0.0)
        if not self.g_min < self.g_max:
            raise ConfigError(f"g_min = {self.g_min!r} must be below g_max = {self.g_max!r} "
                              "(conductance window in microsiemens, 0 <= g_min < g_max)")
        check_range("levels", self.levels, 2)
        check_range("rows", self.rows, 1)
        check_range("cols", self.cols, 2)
        if self.variation not in ("gaussian", "lognormal"):
            raise ConfigError(f"variation = {self.variation!r} is not allowed; choose 'gaussian' or 'lognormal'")
        check_range("d2d_sigma", self.d2d_sigma, 0.0)
        check_range("c2c_sigma", self.c2c_sigma, 0.0)
        check_range("stuck_on_rate", self.stuck_on_rate, 0.0, 1.0)
        check_range("stuck_off_rate", self.stuck_off_rate, 0.0, 1.0)
        if self.stuck_on_rate + self.stuck_off_rate > 1.0:
            raise ConfigError(f"stuck_on_rate + stuck_off_rate = {self.stuck_on_rate + self.stuck_off_rate!r} "
                              "exceeds 1; allowed [0, 1]")
        check_range("dac_bits", self.dac_bits, 0, 24)
        check_range("adc_bits", self.adc_bits, 0, 24)
        if self.dac_bits == 1 or self.adc_bits == 1:
            raise ConfigError("dac_bits and adc_bits must be 0 (ideal) or 2-24: a signed converter needs 2 bits")
        check_range("adc_full_scale", self.adc_full_scale, 0.0)
        check_range("adc_headroom", self.adc_headroom, 0.0, lo_open=True)
        check_range("drift_nu", self.drift_nu, 0.0)
        check_range("drift_nu_std", self.drift_nu_std, 0.0)
        check_range("drift_time", self.drift_time, 0.0, lo_open=True)
        check_range("drift_t0", self.drift_t0, 0.0, lo_open=True)


    @property
    def sigma(self) -> float:
        """Total programming variation: d2d and c2c draws are independent, so their variances add."""
        return float((self.d2d_sigma ** 2 + self.c2c_sigma ** 2) ** 0.5)

    @property
    def has_drift(self) -> bool:
        return (self.drift_nu > 0 or self.drift_nu_std > 0) and self.drift_time != self.drift_t0

    def replace(self, **changes: Any) -> CrossbarSpec:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

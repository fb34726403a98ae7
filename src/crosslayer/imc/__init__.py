"""In-memory computing: ReRAM crossbar non-idealities, crossbar inference, variation-aware training
and an energy / area model (survey Section IV-C; Long et al., DATE 2019; ISAAC; PRIME). The verbs:
:func:`imc_simulate` and :func:`imc_train` (:mod:`crosslayer.imc.api`)."""

from crosslayer.imc.api import (
    ImcTrainConfig,
    ImcTrainResult,
    SimulateConfig,
    SimulateResult,
    imc_simulate,
    imc_train,
)
from crosslayer.imc.crossbar import CrossbarLayer, calibrating_adc, crossbar_layers, crossbar_mvm, to_crossbar
from crosslayer.imc.devices import Conductances, map_to_conductance, program, to_weight, weight_noise
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.imc.training import AwareTrainConfig, noisy_loss, train_variation_aware

__all__ = ["AwareTrainConfig", "Conductances", "CrossbarLayer", "CrossbarSpec", "ImcTrainConfig", "ImcTrainResult",
           "SimulateConfig", "SimulateResult", "calibrating_adc", "crossbar_layers", "crossbar_mvm", "imc_simulate",
           "imc_train", "map_to_conductance", "noisy_loss", "program", "to_crossbar", "to_weight",
           "train_variation_aware", "weight_noise"]

"""In-memory computing: ReRAM crossbar non-idealities, crossbar inference, variation-aware training
and an energy / area model (survey Section IV-C; Long et al., DATE 2019; ISAAC; PRIME)."""

from crosslayer.imc.crossbar import CrossbarLayer, calibrating_adc, crossbar_layers, crossbar_mvm, to_crossbar
from crosslayer.imc.devices import Conductances, map_to_conductance, program, to_weight, weight_noise
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.imc.training import AwareTrainConfig, noisy_loss, train_variation_aware

__all__ = ["AwareTrainConfig", "Conductances", "CrossbarLayer", "CrossbarSpec", "calibrating_adc",
           "crossbar_layers", "crossbar_mvm", "map_to_conductance", "noisy_loss", "program", "to_crossbar",
           "to_weight", "train_variation_aware", "weight_noise"]

"""Built-in models (LeNet-300-100, LeNet-5, SmallVGG, ResNet-20, MobileNetV2) and user-model loading."""

from crosslayer.models.lenet import LeNet5, LeNet300100
from crosslayer.models.mobilenet import MobileNetV2
from crosslayer.models.normalize import Normalize, normalize_inputs, set_input_stats
from crosslayer.models.registry import MODELS, build_model, count_params, load_factory, load_weights
from crosslayer.models.resnet import ResNet20
from crosslayer.models.vgg import SmallVGG

__all__ = ["MODELS", "LeNet5", "LeNet300100", "MobileNetV2", "Normalize", "ResNet20", "SmallVGG", "build_model",
           "count_params", "load_factory", "load_weights", "normalize_inputs", "set_input_stats"]

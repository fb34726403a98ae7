"""Built-in models and user-model loading."""

from crosslayer.models.lenet import LeNet5, LeNet300100
from crosslayer.models.registry import MODELS, build_model, count_params, load_weights
from crosslayer.models.vgg import SmallVGG

__all__ = ["MODELS", "LeNet5", "LeNet300100", "SmallVGG", "build_model", "count_params", "load_weights"]

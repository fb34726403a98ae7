"""Model names to constructors, plus user models given as ``file.py:factory`` or ``pkg.mod:factory``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from crosslayer.errors import ModelError
from crosslayer.models.lenet import LeNet5, LeNet300100
from crosslayer.models.mobilenet import MobileNetV2
from crosslayer.models.normalize import set_input_stats
from crosslayer.models.resnet import ResNet20
from crosslayer.models.vgg import SmallVGG

__all__ = ["MODELS", "build_model", "count_params", "load_factory", "load_weights"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "lenet300": LeNet300100,
    "vgg-small": SmallVGG,
    "resnet20": ResNet20,
    "mobilenetv2": MobileNetV2,
    "mobilenetv2-0.75": partial(MobileNetV2, width=0.75),
    "mobilenetv2-0.5": partial(MobileNetV2, width=0.5),
    "mobilenetv2-0.35": partial(MobileNetV2, width=0.35),
}
_ALIASES = {"lenet-5": "lenet5", "lenet300100": "lenet300", "lenet-300-100": "lenet300", "vgg": "vgg-small",
            "vgg_small": "vgg-small", "smallvgg": "vgg-small", "resnet-20": "resnet20", "resnet_20": "resnet20",
            "mobilenet-v2": "mobilenetv2", "mobilenet_v2": "mobilenetv2"}


def load_factory(spec: str, what: str = "user model") -> Callable[..., Any]:
    """The callable ``factory`` of ``path/to/file.py:factory`` or ``package.module:factory``: the one loader of
    user code (models, detectors). A file is imported once per process and content as one stable module (the
    same classes every time); it is code and runs as code. Every failure is a ``ModelError`` naming ``what``
    was loaded."""
    target, sep, factory = spec.rpartition(":")
    if not sep or not target or not factory:
        raise ModelError(f"{what} {spec!r} must look like path/to/file.py:factory or package.module:factory")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelError(f"{what} file {str(path)!r} does not exist")
        # one stable module per file (and its content) and process: the same classes every time the model is
        # built; a file edited since is imported afresh
        digest = hashlib.sha256(str(path.resolve()).encode() + b"\0" + path.read_bytes())
        mod_name = "crosslayer_user_" + digest.hexdigest()[:16]
        cached = sys.modules.get(mod_name)
        if cached is not None:
            fn = getattr(cached, factory, None)
            if callable(fn):
                return fn
        mspec = importlib.util.spec_from_file_location(mod_name, path)
        if mspec is None or mspec.loader is None:
            raise ModelError(f"cannot import {what} file {str(path)!r}")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[mod_name] = module
        try:
            mspec.loader.exec_module(module)
        except Exception as exc:  # a user's file can raise anything while it is imported
            sys.modules.pop(mod_name, None)
            raise ModelError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelError(f"cannot import module {target!r} for {what} {spec!r}: {exc}") from exc
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ModelError(f"{target!r} has no callable factory {factory!r}")
    return fn


def _factory_kwargs(fn: Callable[..., nn.Module], **sizes: int) -> dict[str, int]:
    """The data-dependent sizes a user factory accepts: each of ``num_classes``, ``in_channels`` and
    ``image_size`` that it names as a parameter (or all three when it takes ``**kwargs``); none for a
    zero-argument factory."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature: call it bare
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(sizes)
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in sizes.items() if k in names}


def check_model_name(name: str) -> None:
    """Fail early (before any data is loaded) on a model that cannot be built: an unknown built-in name, or a
    factory file that does not exist or does not import (the factory file is code: it is imported here)."""
    if ":" in name:
        load_factory(name)
    else:
        _builtin_key(name)


def _builtin_key(name: str) -> str:
    """The registry key of a built-in model name (aliases and case folded); an unknown name is a ModelError."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} "
                         "or give path/to/file.py:factory")
    return key


def check_weights_file(path: str | Path) -> Path:
    """``path`` as a Path when it is a file; a ModelError naming it otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {str(p)!r} does not exist")
    return p


def build_model(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, *,
                input_stats: tuple[Sequence[float], Sequence[float]] | None = None) -> nn.Module:
    """A built-in model by name, or a user model from ``file.py:factory`` / ``pkg.mod:factory``.

    A user factory receives, as keyword arguments, each of ``num_classes``, ``in_channels`` and
    ``image_size`` (the dataset's class count, channel count and image side) that its signature names
    (all three if it takes ``**kwargs``); a factory without parameters is called with none. The factory
    file is code and runs as code: only name files you trust.

    ``input_stats`` = (per-channel mean, per-channel std) of the training images sets the input
    normalisation of models that carry a :class:`~crosslayer.models.normalize.Normalize` layer (ResNet-20,
    MobileNetV2; a user model with one too); models without one are left as they are.
    """
    if ":" in name:
        fn = load_factory(name)
        kwargs = _factory_kwargs(fn, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        try:
            model = fn(**kwargs)
        except Exception as exc:  # the factory is user code
            raise ModelError(f"user factory {name!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ModelError(f"user factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    else:
        model = MODELS[_builtin_key(name)](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    if input_stats is not None:
        set_input_stats(model, *input_stats)
    return model


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict safely (``weights_only=True``); a missing key or a shape mismatch names the layer."""
    p = check_weights_file(path)
    from crosslayer.checkpoint import CheckpointError, load_state_dict_file

    try:
        state = load_state_dict_file(p)
    except CheckpointError as exc:
        raise ModelError(str(exc)) from exc
    own = model.state_dict()
    for k, v in state.items():
        if k not in own:
            raise ModelError(f"weights file {str(p)!r} has layer {k!r} which the model does not have")
        if tuple(own[k].shape) != tuple(v.shape):
            raise ModelError(f"weights for layer {k!r} have shape {tuple(v.shape)}, "
                             f"the model expects {tuple(own[k].shape)}")
    missing = sorted(set(own) - set(state))
    if missing:
        raise ModelError(f"weights file {str(p)!r} lacks layer(s) {', '.join(missing[:5])}")
    model.load_state_dict(state)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

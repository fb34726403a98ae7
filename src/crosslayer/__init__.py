"""crosslayer: cross-layer optimisation of deep neural networks for the edge."""

from importlib import metadata as _metadata

from crosslayer.errors import ConfigError, CrossLayerError, DataError, ModelError, StageError
from crosslayer.report import Report

try:
    __version__ = _metadata.version("crosslayer")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["ConfigError", "CrossLayerError", "DataError", "ModelError", "Report", "StageError", "__version__"]

"""User-facing errors. Every failure a user can cause raises one of these with a message
that says what was wrong and what to do; the CLI prints it and exits non-zero."""

from __future__ import annotations

__all__ = ["ConfigError", "CrossLayerError", "DataError", "ModelError", "StageError"]


class CrossLayerError(Exception):
    """Base class of every error the toolkit reports to a user."""


class ConfigError(CrossLayerError, ValueError):
    """A malformed config, an unknown key or an out-of-range value."""


class DataError(CrossLayerError):
    """A missing, corrupt or unreadable data file."""


class ModelError(CrossLayerError):
    """An unknown model, a user model that cannot be built, or weights that do not fit."""


class StageError(CrossLayerError):
    """A flow stage that cannot run on the model or data it was given."""

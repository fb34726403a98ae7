"""Errors of the hardware model (all :class:`~crosslayer.errors.CrossLayerError` subclasses)."""

from __future__ import annotations

from crosslayer.errors import ConfigError, CrossLayerError

__all__ = ["HardwareConfigError", "MappingError"]


class HardwareConfigError(ConfigError):
    """A malformed accelerator description or layer shape (names the offending field)."""


class MappingError(CrossLayerError):
    """A layer that fits no tiling of the accelerator's buffers, or a dataflow the accelerator lacks."""

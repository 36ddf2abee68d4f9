"""Exceptions of the ``pipelines`` package: everything derives from :class:`PipelinesError`."""

from __future__ import annotations

__all__ = ["ConfigError", "PipelinesError", "RecordError", "StateError"]


class PipelinesError(Exception):
    """Root of every error raised by ``pipelines``."""


class RecordError(PipelinesError):
    """A batch or record does not follow the canonical schema."""


class ConfigError(PipelinesError):
    """Invalid configuration; the message names the offending key."""


class StateError(PipelinesError):
    """Detector or engine state cannot be restored (wrong version, corrupt snapshot)."""

"""Exceptions of the ``stream`` package: everything derives from :class:`StreamError`."""

from __future__ import annotations

__all__ = ["DecodeError", "KafkaSetupError", "SourceError", "StreamError"]


class StreamError(Exception):
    """Root of every error raised by ``stream``."""


class DecodeError(StreamError):
    """A message cannot be decoded. ``reason`` is a short, bounded label (metric-safe)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SourceError(StreamError):
    """An input cannot be opened or read."""


class KafkaSetupError(StreamError):
    """Kafka client configuration or connection failed."""

"""Alert sinks: JSON lines to a file or stdout (the Kafka sink lives with the runtime)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

from pipelines.incidents import Incident
from pipelines.serialize import render, to_json_bytes

__all__ = ["JsonLinesAlertSink"]


class JsonLinesAlertSink:
    """Writes each alert as one JSON line in OCSF (default) or ECS."""

    def __init__(self, path: str | Path | None = None, fmt: str = "ocsf") -> None:
        self.fmt = fmt
        self.path = Path(path) if path and str(path) != "-" else None
        self._fh: IO[bytes] = open(self.path, "wb") if self.path else sys.stdout.buffer  # noqa: SIM115
        self.written = 0

    def send(self, alerts: list[Incident]) -> None:
        for a in alerts:
            self._fh.write(to_json_bytes(render(a, self.fmt)) + b"\n")
        self.written += len(alerts)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self.flush()
        if self.path:
            self._fh.close()

    def __enter__(self) -> JsonLinesAlertSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

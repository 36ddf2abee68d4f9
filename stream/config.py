"""Loading the configuration file (YAML or TOML) and splitting it between core and shell.

The core sections (``home_networks``, ``engine``, ``allowlist``, ``detectors``) are
validated by :class:`pipelines.config.Settings`; the shell sections (``alerts``,
``kafka``, ``metrics``, ``state``, ``inputs``) by the commands that use them. Any other
top-level key is an error that names it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import PIPELINE_SECTIONS, Settings
from pipelines.exceptions import ConfigError
from stream.exceptions import StreamError

__all__ = ["STREAM_SECTIONS", "Config", "load_config"]

STREAM_SECTIONS = ("alerts", "kafka", "metrics", "state", "inputs")


class Config:
    """A parsed configuration: ``settings`` for the engine, ``raw`` for everything."""

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        raw = dict(raw or {})
        for key in raw:
            if key not in PIPELINE_SECTIONS and key not in STREAM_SECTIONS:
                known = ", ".join(sorted(PIPELINE_SECTIONS + STREAM_SECTIONS))
                raise StreamError(f"config: unknown top-level key {key!r} (known: {known})")
        self.raw = raw
        try:
            self.settings = Settings.from_mapping(
                {k: raw[k] for k in PIPELINE_SECTIONS if k in raw}
            )
        except ConfigError as exc:
            raise StreamError(f"config: {exc}") from exc

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name) or {}
        if not isinstance(value, Mapping):
            raise StreamError(f"config: {name}: expected a mapping")
        return dict(value)

    def alert_format(self, override: str | None = None) -> str:
        fmt = override or self.section("alerts").get("format", "ocsf")
        if fmt not in ("ocsf", "ecs"):
            raise StreamError(f"config: alerts.format: expected 'ocsf' or 'ecs', got {fmt!r}")
        return str(fmt)


def load_config(path: str | Path | None) -> Config:
    """Read ``path`` (``.toml``, or YAML otherwise); ``None`` gives the defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise StreamError(f"config: cannot read {p}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise StreamError(
            f"config: {p} is not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: {exc}"
        ) from exc
    if data is not None and not isinstance(data, Mapping):
        raise StreamError(f"config: {p} must hold a mapping at the top level")
    return Config(data)

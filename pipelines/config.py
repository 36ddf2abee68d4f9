"""Engine configuration from a plain mapping (the parsed YAML/TOML file).

Every key is checked; a wrong one gives one :class:`ConfigError` that names it.

>>> s = Settings.from_mapping({"home_networks": ["10.0.0.0/8"], "engine": {"window": 600},
...                            "detectors": {"beacon": {"enabled": False}}})
>>> s.engine.window, "beacon" in s.detector_names(), s.home.cidrs
(600.0, False, ['10.0.0.0/8'])
>>> Settings.from_mapping({"engine": {"windw": 1}})
Traceback (most recent call last):
...
pipelines.exceptions.ConfigError: engine.windw: unknown key (known: incident_gap, lateness, max_empty_windows, window)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipelines.allowlist import Suppressor
from pipelines.detectors import DETECTORS, available, detector_class
from pipelines.engine import Engine, EngineConfig
from pipelines.exceptions import ConfigError
from pipelines.records import DEFAULT_HOME, HomeNetworks

__all__ = ["PIPELINE_SECTIONS", "Settings"]

#: top-level keys this module owns; the shell (stream) owns the others it declares
PIPELINE_SECTIONS = ("home_networks", "engine", "allowlist", "detectors")


def _expect_mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def _expect_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
    return [str(v) for v in value]


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Coerce ``value`` to the type of ``default`` (numbers, bools, lists, strings)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if value != value:  # NaN
            raise ConfigError(f"{key}: NaN is not allowed")
        return (
            type(default)(value)
            if isinstance(default, float) or float(value).is_integer()
            else value
        )
    if isinstance(default, tuple | list):
        return type(default)(_expect_list(value, key))
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


@dataclass
class Settings:
    """Validated engine settings."""

    home: HomeNetworks = field(default_factory=HomeNetworks.default)
    engine: EngineConfig = field(default_factory=EngineConfig)
    allowlist: dict[str, list[str]] = field(default_factory=dict)
    detectors: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # name -> params (enabled only)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Settings:
        data = _expect_mapping(data, "config")
        home = HomeNetworks(
            _expect_list(data.get("home_networks", list(DEFAULT_HOME)), "home_networks")
        )

        eng_raw = _expect_mapping(data.get("engine"), "engine")
        known = {f.name: f.default for f in fields(EngineConfig)}
        for k in eng_raw:
            if k not in known:
                raise ConfigError(f"engine.{k}: unknown key (known: {', '.join(sorted(known))})")
        eng = EngineConfig(**{k: _coerce(v, known[k], f"engine.{k}") for k, v in eng_raw.items()})
        if eng.window <= 0 or eng.lateness < 0:
            raise ConfigError("engine.window must be > 0 and engine.lateness >= 0")

        allow_raw = _expect_mapping(data.get("allowlist"), "allowlist")
        allow: dict[str, list[str]] = {}
        for k, v in allow_raw.items():
            if k not in ("hosts", "destinations", "domains"):
                raise ConfigError(
                    f"allowlist.{k}: unknown key (known: destinations, domains, hosts)"
                )
            allow[k] = _expect_list(v, f"allowlist.{k}")
        Suppressor(**allow)  # validates CIDRs, naming the key

        det_raw = _expect_mapping(data.get("detectors"), "detectors")
        present = set(available())
        dets: dict[str, dict[str, Any]] = {}
        for name in DETECTORS:
            section = dict(_expect_mapping(det_raw.get(name), f"detectors.{name}"))
            enabled = section.pop("enabled", True)
            if not isinstance(enabled, bool):
                raise ConfigError(f"detectors.{name}.enabled: expected true/false, got {enabled!r}")
            if not enabled or name not in present:
                if section and name not in present:
                    raise ConfigError(f"detectors.{name}: this detector is not installed")
                continue
            sig = inspect.signature(detector_class(name).__init__)
            params = {p: v for p, v in sig.parameters.items() if p != "self"}
            checked: dict[str, Any] = {}
            for k, v in section.items():
                if k not in params:
                    raise ConfigError(
                        f"detectors.{name}.{k}: unknown parameter (known: enabled, {', '.join(sorted(params))})"
                    )
                default = params[k].default
                checked[k] = _coerce(
                    v,
                    None if default is inspect.Parameter.empty else default,
                    f"detectors.{name}.{k}",
                )
            dets[name] = checked
        for name in det_raw:
            if name not in DETECTORS:
                raise ConfigError(
                    f"detectors.{name}: unknown detector (known: {', '.join(DETECTORS)})"
                )
        return cls(home=home, engine=eng, allowlist=allow, detectors=dets)

    def detector_names(self) -> list[str]:
        return list(self.detectors)

    def build_engine(self) -> Engine:
        """A fresh engine with the configured detectors and allow-lists."""
        from pipelines.detectors import make_detector

        detectors = [make_detector(name, **params) for name, params in self.detectors.items()]
        return Engine(self.engine, detectors=detectors, suppressor=Suppressor(**self.allowlist))

"""Detectors, one module per family, all following :class:`~pipelines.detectors.base.Detector`.

>>> sorted(DETECTORS)
['beacon', 'dns_tunnel', 'exfil', 'host_behaviour', 'lateral']
"""

from __future__ import annotations

import importlib
from typing import Any

from pipelines.detectors.base import Detector, Evidence, Finding, Window
from pipelines.exceptions import ConfigError

__all__ = ["DETECTORS", "Detector", "Evidence", "Finding", "Window", "available", "make_detector"]

#: detector name -> "module:Class"
DETECTORS: dict[str, str] = {
    "exfil": "pipelines.detectors.exfil:ExfilDetector",
    "beacon": "pipelines.detectors.beacon:BeaconDetector",
    "dns_tunnel": "pipelines.detectors.dns_tunnel:DnsTunnelDetector",
    "lateral": "pipelines.detectors.lateral:LateralDetector",
    "host_behaviour": "pipelines.detectors.host_behaviour:HostBehaviourDetector",
}


def detector_class(name: str) -> type[Detector]:
    try:
        module, _, cls = DETECTORS[name].partition(":")
    except KeyError:
        raise ConfigError(
            f"detectors.{name}: unknown detector; known: {', '.join(DETECTORS)}"
        ) from None
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def available() -> list[str]:
    """Names of detectors whose module is present."""
    out = []
    for name, target in DETECTORS.items():
        try:
            importlib.import_module(target.partition(":")[0])
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out


def make_detector(name: str, **params: Any) -> Detector:
    """Instantiate detector ``name``; an unknown parameter is a :class:`ConfigError` naming it."""
    cls = detector_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"detectors.{name}: {exc}") from exc

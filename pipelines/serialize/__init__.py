"""Alert renderings of an :class:`~pipelines.incidents.Incident`: OCSF 1.8.0 (default) and ECS 9.

>>> from pipelines.incidents import Incident
>>> inc = Incident("u-1", "exfil", "exfiltration", "10.0.0.5", "203.0.113.9", 0.0, 0.0, 1.5)
>>> render(inc)["class_uid"], render(inc, "ecs")["event"]["kind"]
(2004, 'alert')
>>> to_json_bytes({"b": 1, "a": [2.5, float("nan")]})
b'{"a":[2.5,null],"b":1}'
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipelines.exceptions import ConfigError
from pipelines.incidents import Incident
from pipelines.serialize.ecs import ECS_VERSION, to_ecs
from pipelines.serialize.explain import explanation, jsonable
from pipelines.serialize.ocsf import OCSF_VERSION, to_ocsf

__all__ = [
    "ECS_VERSION",
    "FORMATS",
    "OCSF_VERSION",
    "explanation",
    "render",
    "to_ecs",
    "to_json_bytes",
    "to_ocsf",
]

FORMATS = ("ocsf", "ecs")

_encoder = msgspec.json.Encoder(order="sorted")


def render(
    incident: Incident, fmt: str = "ocsf", product_version: str = "0.1.0", snapshot: bool = True
) -> dict[str, Any]:
    """``incident`` as an OCSF (``fmt="ocsf"``) or ECS (``fmt="ecs"``) dict.

    ``snapshot=False`` leaves ``snapshot_id`` out of the body (the Kafka runtime sends it
    as a record header).
    """
    if fmt == "ocsf":
        return to_ocsf(incident, product_version=product_version, snapshot=snapshot)
    if fmt == "ecs":
        return to_ecs(incident, snapshot=snapshot)
    raise ConfigError(f"alerts.format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def to_json_bytes(d: Any) -> bytes:
    """Compact JSON with keys sorted (same alert ⇒ same bytes); NaN/inf become null."""
    return _encoder.encode(jsonable(d))

"""ECS 9 rendering of an :class:`Incident` (Elastic Common Schema alert document).

* ``event.kind: alert``; ``event.category: [network, intrusion_detection]`` with
  ``event.type: [info]`` (the only type both categories allow for an alert);
  ``event.id`` is unique per emitted revision (``uid:revision``); ``event.severity`` the
  OCSF severity id (1–5); ``event.risk_score`` 0–100; ``event.start`` / ``event.end``
  the evidence span; ``event.dataset: slowburn.alerts``, ``event.module: slowburn``.
* ``rule`` — the detector (``rule.id`` ``slowburn.<detector>``, version = model version).
* ``threat`` — ``framework: MITRE ATT&CK``, ``technique.{id,name}`` (parents),
  ``technique.subtechnique.{id,name}``, ``tactic.{id,name}``, all arrays.
* ``source.ip``, ``destination.ip`` / ``port``, ``dns.question.registered_domain``,
  ``related.ip`` / ``related.hosts``, ``network.direction`` (``outbound``;
  lateral → ``internal``; ``inbound``).
* ``slowburn`` — the explanation (custom field set; ECS allows custom top-level fields).
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from pipelines import attack
from pipelines.incidents import Incident
from pipelines.serialize.explain import explanation, jsonable

__all__ = ["ECS_VERSION", "to_ecs"]

ECS_VERSION = "9.0.0"
NETWORK_DIRECTION = {
    "outbound": "outbound",
    "lateral": "internal",
    "internal": "internal",
    "inbound": "inbound",
}


def _iso(t: float) -> str:
    """UTC ISO-8601 with milliseconds.

    >>> _iso(0.25)
    '1970-01-01T00:00:00.250Z'
    """
    if not math.isfinite(t):
        t = 0.0
    ms = round(float(t) * 1000.0)
    d = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _threat(techniques: tuple[str, ...]) -> dict[str, Any]:
    tech_ids: list[str] = []
    sub_ids: list[str] = []
    tactic_ids: list[str] = []
    tactic_names: list[str] = []
    for uid in techniques:
        p = attack.parent(uid)
        if p not in tech_ids:
            tech_ids.append(p)
        if attack.is_subtechnique(uid) and uid not in sub_ids:
            sub_ids.append(uid)
        for t in attack.tactics(uid):
            if t.uid not in tactic_ids:
                tactic_ids.append(t.uid)
                tactic_names.append(t.name)
    technique: dict[str, Any] = {
        "id": tech_ids,
        "name": [attack.technique_name(t) or t for t in tech_ids],
        "reference": [f"https://attack.mitre.org/techniques/{t}/" for t in tech_ids],
    }
    if sub_ids:
        technique["subtechnique"] = {
            "id": sub_ids,
            "name": [attack.technique_name(s) or s for s in sub_ids],
            "reference": [
                f"https://attack.mitre.org/techniques/{s.replace('.', '/')}/" for s in sub_ids
            ],
        }
    return {
        "framework": "MITRE ATT&CK",
        "technique": technique,
        "tactic": {
            "id": tactic_ids,
            "name": tactic_names,
            "reference": [f"https://attack.mitre.org/tactics/{t}/" for t in tactic_ids],
        },
    }


def to_ecs(inc: Incident, snapshot: bool = True) -> dict[str, Any]:
    """Render ``inc`` as an ECS 9 alert document (see module docstring).

    ``snapshot=False``: no ``snapshot_id`` in the explanation (see :func:`explanation`).

    >>> from pipelines.incidents import Incident
    >>> d = to_ecs(Incident("u-1", "lateral", "lateral_movement", "10.0.0.5", "", 0.0, 0.0, 60.0,
    ...                     attacks=("T1021.002",), dst=("10.0.0.9",), dst_ports=(445,),
    ...                     direction="lateral"))
    >>> d["event"]["kind"], d["network"]["direction"], d["threat"]["technique"]["id"]
    ('alert', 'internal', ['T1021'])
    >>> d["threat"]["technique"]["subtechnique"]["name"]
    ['SMB/Windows Admin Shares']
    """
    expl = jsonable(explanation(inc, snapshot))
    doc: dict[str, Any] = {
        "@timestamp": _iso(inc.end),
        "ecs": {"version": ECS_VERSION},
        "message": inc.sentence,
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "id": f"{inc.uid}:{inc.revision}",
            "severity": int(inc.severity_id),
            "risk_score": float(min(100, max(0, inc.risk_score))),
            "start": _iso(inc.start),
            "end": _iso(inc.end),
            "duration": round(max(float(inc.end - inc.start), 0.0) * 1e9),
            "dataset": "slowburn.alerts",
            "module": "slowburn",
            "provider": inc.detector,
            "action": inc.kind,
            "reason": inc.sentence,
            "outcome": "unknown",
        },
        "rule": {
            "name": inc.title or f"{inc.kind} by {inc.entity}",
            "id": f"slowburn.{inc.detector}",
            "version": inc.model_version,
            "category": inc.kind,
            "ruleset": "slowburn",
            "description": inc.sentence,
        },
        "observer": {"product": "slowburn", "vendor": "slowburn", "type": "ids"},
    }
    if inc.attacks:
        doc["threat"] = _threat(inc.attacks)
    related_ip: list[str] = []
    if inc.src:
        doc["source"] = {"ip": inc.src}
        related_ip.append(inc.src)
    if inc.dst:
        dest: dict[str, Any] = {"ip": inc.dst[0]}
        if inc.dst_ports:
            dest["port"] = int(inc.dst_ports[0])
        doc["destination"] = dest
        related_ip.extend(d for d in inc.dst if d not in related_ip)
    if inc.domain:
        doc["dns"] = {"question": {"registered_domain": inc.domain}}
        doc["related"] = {"hosts": [inc.domain]}
    if related_ip:
        doc.setdefault("related", {})["ip"] = related_ip
    direction = NETWORK_DIRECTION.get(inc.direction)
    if direction:
        doc["network"] = {"direction": direction}
    doc["slowburn"] = {
        **expl,
        "destinations": list(inc.dst),
        "destination_ports": [int(p) for p in inc.dst_ports],
        "count": int(inc.count),
        "confidence": int(inc.confidence),
        "attacks": list(inc.attacks),
        "analytic": inc.analytic,
    }
    return doc

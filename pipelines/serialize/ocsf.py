"""OCSF 1.8.0 Detection Finding (``class_uid`` 2004) rendering of an :class:`Incident`.

Mapping (OCSF attribute ← incident):

* ``activity_id`` 1 Create (``status == "new"``) / 2 Update / 3 Close (``"closed"``,
  from :meth:`IncidentBook.close_stale`, with ``is_alert`` false); ``type_uid`` =
  ``class_uid·100 + activity_id``; ``category_uid`` 2 Findings; ``status_id`` 1 New
  (slowburn never triages: the SIEM owns the workflow); ``is_alert`` true.
* ``time`` — event time of the latest evidence (ms); ``start_time`` / ``end_time`` the
  evidence span; ``finding_info.created_time`` when the incident was created,
  ``modified_time`` / ``last_seen_time`` its latest evidence, ``first_seen_time`` its
  earliest. All timestamps are integer epoch milliseconds of *event* time.
* ``severity_id``, ``confidence_id`` (<40 Low, <70 Medium, else High) with
  ``confidence_score``, ``risk_score`` with ``risk_level_id`` (<20 Info, <40 Low,
  <60 Medium, <80 High, else Critical), ``count``, ``message`` (the sentence).
* ``finding_info`` — uid (the deterministic incident uid), title, desc (sentence),
  types [kind], analytic {name detector, type_id Rule/Behavioral/Statistical/Learning,
  uid, version model_version}, attacks (technique + sub_technique + tactic, one object
  per tactic), related_events_count (findings merged).
* ``evidences`` — one per destination (bounded): src/dst endpoint, connection_info with
  ``direction_id`` 2 Outbound / 3 Lateral / 1 Inbound, the DNS query for a domain, and
  ``data`` with the detector's feature evidence.
* ``observables`` — source IP, destination IPs, the domain.
* ``metadata`` — version 1.8.0, product slowburn, ``uid`` unique per emitted revision,
  ``correlation_uid`` the incident uid, ``log_name`` slowburn.alerts.
* ``unmapped.slowburn`` — the full explanation (:func:`~pipelines.serialize.explain.explanation`).
"""

from __future__ import annotations

import math
from typing import Any

from pipelines import attack
from pipelines.incidents import Incident
from pipelines.serialize.explain import explanation, jsonable

__all__ = ["OCSF_VERSION", "to_ocsf"]

OCSF_VERSION = "1.8.0"
CLASS_UID = 2004
CATEGORY_UID = 2

ACTIVITY = {1: "Create", 2: "Update", 3: "Close"}
SEVERITY = {
    0: "Unknown",
    1: "Informational",
    2: "Low",
    3: "Medium",
    4: "High",
    5: "Critical",
    6: "Fatal",
}
CONFIDENCE = {0: "Unknown", 1: "Low", 2: "Medium", 3: "High"}
RISK_LEVEL = {0: "Info", 1: "Low", 2: "Medium", 3: "High", 4: "Critical"}
ANALYTIC_TYPE = {"Rule": 1, "Behavioral": 2, "Statistical": 3, "Learning": 4}
ANALYTIC_CAPTION = {
    0: "Unknown",
    1: "Rule",
    2: "Behavioral",
    3: "Statistical",
    4: "Learning (ML/DL)",
}
DIRECTION = {"inbound": 1, "outbound": 2, "lateral": 3, "internal": 3}
DIRECTION_CAPTION = {0: "Unknown", 1: "Inbound", 2: "Outbound", 3: "Lateral"}
#: observable type ids used here (OCSF observable.type_id)
OBS_HOSTNAME, OBS_IP = 1, 2

MAX_EVIDENCES = 8


def _ms(t: float) -> int:
    return round(float(t) * 1000.0) if math.isfinite(t) else 0


def confidence_id(confidence: int) -> int:
    """OCSF ``confidence_id`` of a 0–100 confidence.

    >>> confidence_id(20), confidence_id(55), confidence_id(90)
    (1, 2, 3)
    """
    return 1 if confidence < 40 else 2 if confidence < 70 else 3


def risk_level_id(risk: int) -> int:
    """OCSF ``risk_level_id`` of a 0–100 risk score.

    >>> [risk_level_id(r) for r in (5, 30, 50, 70, 95)]
    [0, 1, 2, 3, 4]
    """
    return 0 if risk < 20 else 1 if risk < 40 else 2 if risk < 60 else 3 if risk < 80 else 4


def attacks_of(techniques: tuple[str, ...]) -> list[dict[str, Any]]:
    """OCSF ``attack`` objects for technique ids (one per technique × tactic).

    >>> a = attacks_of(("T1048.003",))[0]
    >>> a["technique"]["uid"], a["sub_technique"]["uid"], a["tactic"]["name"]
    ('T1048', 'T1048.003', 'Exfiltration')
    """
    out: list[dict[str, Any]] = []
    for uid in techniques:
        tech_uid = attack.parent(uid)
        technique: dict[str, Any] = {"uid": tech_uid}
        name = attack.technique_name(tech_uid)
        if name:
            technique["name"] = name
        base: dict[str, Any] = {"technique": technique, "version": attack.ATTACK_VERSION}
        if attack.is_subtechnique(uid):
            sub: dict[str, Any] = {"uid": uid}
            sub_name = attack.technique_name(uid)
            if sub_name:
                sub["name"] = sub_name
            base["sub_technique"] = sub
        tactics = attack.tactics(uid)
        if not tactics:
            out.append(base)
        for t in tactics:
            out.append({**base, "tactic": {"uid": t.uid, "name": t.name}})
    return out


def _evidences(inc: Incident, expl: dict[str, Any]) -> list[dict[str, Any]]:
    direction_id = DIRECTION.get(inc.direction, 0)
    conn = {"direction_id": direction_id, "direction": DIRECTION_CAPTION[direction_id]}
    data = {"features": expl["evidence"], "facts": expl["facts"]}
    src = {"ip": inc.src} if inc.src else {}
    port = inc.dst_ports[0] if len(inc.dst_ports) == 1 else None
    out: list[dict[str, Any]] = []
    for dst in inc.dst[:MAX_EVIDENCES]:
        ev: dict[str, Any] = {"name": inc.kind, "connection_info": dict(conn)}
        if src:
            ev["src_endpoint"] = dict(src)
        dst_ep: dict[str, Any] = {"ip": dst}
        if port is not None and 0 <= port <= 65535:
            dst_ep["port"] = int(port)
        ev["dst_endpoint"] = dst_ep
        out.append(ev)
    if not out:
        ev = {"name": inc.kind, "connection_info": dict(conn)}
        if src:
            ev["src_endpoint"] = dict(src)
        out.append(ev)
    if inc.domain:
        for ev in out:
            ev["query"] = {"hostname": inc.domain}
    out[0]["data"] = data
    return out


def _observables(inc: Incident) -> list[dict[str, Any]]:
    obs: list[dict[str, Any]] = []
    if inc.src:
        obs.append(
            {
                "name": "evidences[].src_endpoint.ip",
                "type_id": OBS_IP,
                "type": "IP Address",
                "value": inc.src,
            }
        )
    for d in inc.dst[:MAX_EVIDENCES]:
        obs.append(
            {
                "name": "evidences[].dst_endpoint.ip",
                "type_id": OBS_IP,
                "type": "IP Address",
                "value": d,
            }
        )
    if inc.domain:
        obs.append(
            {
                "name": "evidences[].query.hostname",
                "type_id": OBS_HOSTNAME,
                "type": "Hostname",
                "value": inc.domain,
            }
        )
    return obs


def to_ocsf(inc: Incident, product_version: str = "0.1.0", snapshot: bool = True) -> dict[str, Any]:
    """Render ``inc`` as an OCSF 1.8.0 Detection Finding dict (see module docstring).

    ``snapshot=False``: no ``snapshot_id`` in the explanation (see :func:`explanation`).

    >>> from pipelines.incidents import Incident
    >>> d = to_ocsf(Incident("u-1", "beacon", "beaconing", "10.0.0.5", "198.51.100.7", 0.0, 0.0,
    ...                      600.0, severity_id=3, confidence=60, risk_score=55,
    ...                      attacks=("T1071",), dst=("198.51.100.7",), dst_ports=(443,)))
    >>> d["class_uid"], d["type_uid"], d["time"], d["finding_info"]["attacks"][0]["tactic"]["uid"]
    (2004, 200401, 600000, 'TA0011')
    """
    activity_id = {"new": 1, "closed": 3}.get(inc.status, 2)
    severity_id = int(min(6, max(0, inc.severity_id)))
    conf_id = confidence_id(inc.confidence)
    risk = int(min(100, max(0, inc.risk_score)))
    risk_id = risk_level_id(risk)
    expl = explanation(inc, snapshot)
    analytic_id = ANALYTIC_TYPE.get(inc.analytic, 0)
    finding_info: dict[str, Any] = {
        "uid": inc.uid,
        "title": inc.title or f"{inc.kind} by {inc.entity}",
        "desc": inc.sentence,
        "types": [inc.kind],
        "created_time": _ms(inc.created or inc.end),
        "modified_time": _ms(inc.end),
        "first_seen_time": _ms(inc.start),
        "last_seen_time": _ms(inc.end),
        "related_events_count": int(inc.findings_n),
        "analytic": {
            "name": inc.detector,
            "uid": f"slowburn.{inc.detector}",
            "type_id": analytic_id,
            "type": ANALYTIC_CAPTION[analytic_id],
            "version": inc.model_version,
        },
    }
    attacks = attacks_of(inc.attacks)
    if attacks:
        finding_info["attacks"] = attacks
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {
            "name": "slowburn",
            "vendor_name": "slowburn",
            "uid": "slowburn",
            "version": product_version,
        },
        "uid": f"{inc.uid}:{inc.revision}",
        "correlation_uid": inc.uid,
        "log_name": "slowburn.alerts",
        "event_code": inc.kind,
    }
    return {
        "activity_id": activity_id,
        "activity_name": ACTIVITY[activity_id],
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"Detection Finding: {ACTIVITY[activity_id]}",
        "time": _ms(inc.end),
        "start_time": _ms(inc.start),
        "end_time": _ms(inc.end),
        "severity_id": severity_id,
        "severity": SEVERITY[severity_id],
        "confidence_id": conf_id,
        "confidence": CONFIDENCE[conf_id],
        "confidence_score": int(min(100, max(0, inc.confidence))),
        "risk_score": risk,
        "risk_level_id": risk_id,
        "risk_level": RISK_LEVEL[risk_id],
        "status_id": 1,
        "status": "New",
        "is_alert": activity_id != 3,
        "count": int(max(inc.count, 0)),
        "message": inc.sentence,
        "finding_info": finding_info,
        "evidences": _evidences(inc, expl),
        "observables": _observables(inc),
        "metadata": metadata,
        "unmapped": {"slowburn": jsonable(expl)},
    }

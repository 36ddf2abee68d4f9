"""Scoring alerts against labelled truth (``truth.json``, the shared datasets' schema).

An alert (an incident revision) matches a truth incident when

* the **kind** agrees, or their ATT&CK techniques share a family (``T1048`` ~ ``T1048.003``);
* the **entities** agree: the alert's host is the incident's source, or (for incidents
  seen from the victim side) one of the alert's destinations is the incident's
  destination and its host is the source; and
* the **times overlap**: the alert's evidence span meets the incident's span widened by
  ``slack`` seconds.

Time to detect is measured from the incident's start to the end of the evidence of the
first matching revision (what the engine knew when it first raised the alert).

>>> inc = {"id": "x-1", "kind": "exfiltration", "attack": ["T1048"], "src": "10.0.0.5",
...        "dst": "203.0.113.9", "start": "2024-01-01T00:00:00Z", "end": "2024-01-03T00:00:00Z"}
>>> class A:  # any object with these attributes (an Incident) will do
...     uid, detector, kind, entity, src, dst, attacks = "u", "exfil", "exfiltration", "10.0.0.5", "10.0.0.5", ("203.0.113.9",), ("T1048", "T1030")
...     start, end = 1704070800.0, 1704078000.0
>>> m = match_incident(inc, [A()])
>>> m.time_to_detect, m.technique_correct
(10800.0, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["EvalReport", "IncidentResult", "Match", "evaluate", "match_incident", "parse_time"]

#: kinds that describe the same activity for matching purposes
_KIND_GROUPS = [
    {"exfiltration", "baseline_drift"},
    {"beaconing", "c2"},
    {"dns_tunnel", "dns_exfiltration"},
    {"lateral_movement", "discovery", "brute_force"},
]


def parse_time(value: Any) -> float:
    """ISO-8601 (``...Z``) or epoch seconds -> epoch seconds.

    >>> parse_time("2024-01-01T00:00:00.500Z")
    1704067200.5
    """
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _family(t: str) -> str:
    return t.split(".", 1)[0]


def _kinds_agree(truth_kind: str, alert_kind: str) -> bool:
    if truth_kind == alert_kind:
        return True
    return any(truth_kind in g and alert_kind in g for g in _KIND_GROUPS)


def _as_list(v: Any) -> list[str]:
    if v is None or v == "":
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


@dataclass
class Match:
    alert: Any
    time_to_detect: float
    technique_correct: bool


def _matches(inc: Mapping[str, Any], a: Any, slack: float) -> bool:
    t_attacks = _as_list(inc.get("attack"))
    a_attacks = list(getattr(a, "attacks", ()) or ())
    families = {_family(t) for t in t_attacks} & {_family(t) for t in a_attacks}
    if not (_kinds_agree(str(inc.get("kind", "")), str(a.kind)) or families):
        return False
    srcs = set(_as_list(inc.get("src")))
    dsts = set(_as_list(inc.get("dst")))
    hosts = {a.entity, getattr(a, "src", "")} - {""}
    adst = set(getattr(a, "dst", ()) or ())
    if not (hosts & srcs or (not srcs and hosts & dsts) or (hosts & dsts and adst & srcs)):
        return False
    start, end = parse_time(inc["start"]) - slack, parse_time(inc["end"]) + slack
    return bool(a.start <= end and a.end >= start)


def match_incident(
    inc: Mapping[str, Any], alerts: Sequence[Any], slack: float = 3600.0
) -> Match | None:
    """The earliest alert revision that matches truth incident ``inc`` (or ``None``)."""
    hits = [a for a in alerts if _matches(inc, a, slack)]
    if not hits:
        return None
    first = min(hits, key=lambda a: a.end)
    t_attacks = {_family(t) for t in _as_list(inc.get("attack"))}
    exact = set(_as_list(inc.get("attack")))
    correct = any(t in exact or _family(t) in t_attacks for a in hits for t in a.attacks)
    return Match(first, max(0.0, first.end - parse_time(inc["start"])), correct)


@dataclass
class IncidentResult:
    id: str
    kind: str
    detected: bool
    time_to_detect: float | None
    technique_correct: bool
    detector: str = ""


@dataclass
class EvalReport:
    incidents: list[IncidentResult] = field(default_factory=list)
    alerts: int = 0  # distinct incidents (uids) raised
    true_alerts: int = 0
    false_alerts: int = 0
    host_days: float = 0.0
    days: float = 0.0

    @property
    def recall(self) -> float:
        return (
            sum(r.detected for r in self.incidents) / len(self.incidents) if self.incidents else 1.0
        )

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else 1.0

    @property
    def false_per_1000_host_days(self) -> float:
        return 1000.0 * self.false_alerts / self.host_days if self.host_days else 0.0

    @property
    def alerts_per_day(self) -> float:
        return self.alerts / self.days if self.days else float(self.alerts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "incidents": [r.__dict__ for r in self.incidents],
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "false_alerts": self.false_alerts,
            "recall": self.recall,
            "precision": self.precision,
            "false_per_1000_host_days": self.false_per_1000_host_days,
            "alerts_per_day": self.alerts_per_day,
            "host_days": self.host_days,
        }


def evaluate(
    truth: Mapping[str, Any],
    alerts: Iterable[Any],
    hosts: int | None = None,
    slack: float = 3600.0,
) -> EvalReport:
    """Score every alert revision in ``alerts`` against ``truth``.

    An incident (alert uid) is a true alert if any of its revisions matches a truth
    incident; otherwise it is a false alert. ``hosts`` (default: the number of internal
    hosts listed in the truth) and the truth span give the host-days.
    """
    alerts = list(alerts)
    incidents = list(truth.get("incidents", []))
    report = EvalReport()
    matched_uids: set[str] = set()
    for inc in incidents:
        m = match_incident(inc, alerts, slack)
        if m is not None:
            matched_uids.update(a.uid for a in alerts if _matches(inc, a, slack))
        report.incidents.append(
            IncidentResult(
                id=str(inc.get("id", "")),
                kind=str(inc.get("kind", "")),
                detected=m is not None,
                time_to_detect=None if m is None else m.time_to_detect,
                technique_correct=bool(m and m.technique_correct),
                detector="" if m is None else str(m.alert.detector),
            )
        )
    uids = {a.uid for a in alerts}
    report.alerts = len(uids)
    report.true_alerts = len(uids & matched_uids)
    report.false_alerts = len(uids - matched_uids)
    span = truth.get("span") or {}
    if span.get("start") and span.get("end"):
        report.days = max((parse_time(span["end"]) - parse_time(span["start"])) / 86400.0, 1.0 / 24)
    n_hosts = hosts if hosts is not None else len(truth.get("hosts") or {})
    report.host_days = n_hosts * report.days
    return report

"""Findings → incidents: one alert per (detector, entity, episode), updated as it escalates.

Detectors report a :class:`~pipelines.detectors.base.Finding` for every window in which
an entity looks anomalous. An analyst wants one alert per *incident* instead:
:class:`IncidentBook` groups findings by ``(detector, entity, episode)`` and returns an
:class:`Incident` only when it is created or has **materially** changed:

* it is new;
* its severity rose;
* its risk score rose by at least ``risk_step`` (default 5) points;
* its count (connections, queries …) or its byte volume at least doubled (``growth``)
  since the last emitted revision;
* a new ATT&CK technique joined it.

Severity rises and new techniques are emitted at once; risk and growth updates wait at
least ``min_update_interval`` seconds of event time after the previous emission (the
change is not lost — it is emitted with the next finding after the interval).

**Episodes.** An incident stays open while findings keep coming; when an entity's
episode saw no finding for ``gap`` seconds of event time (default 24 h), the next
finding opens a new incident with a new uid. :meth:`IncidentBook.close_stale` drops
idle incidents so memory stays bounded, and ``max_open`` caps the number of open
incidents (the least recently active is dropped first).

**Deterministic ids.** ``uid`` is a UUID-formatted string made from
``sha256(detector | entity | episode | floor(first window start) | model_version)``:
replaying the same input with the same model gives the same ids, so a SIEM can
de-duplicate at-least-once deliveries.

**Scoring** (all inputs are evidence, no wall clock)::

    z_f   = min(1, max|z| / 10)                      strongest robust z-score
    n_f   = min(1, log2(1 + findings) / log2(13))    1 finding → 0.27, 12 (1 h of windows) → 1
    d_f   = min(1, (end - start) / 6 h)              how long the activity has lasted
    raw   = 0.55·score_max + 0.15·z_f + 0.15·n_f + 0.15·d_f
    host  = +15·(h - 0.7)/0.3  if h > 0.7            host_behaviour score h ∈ [0, 1] high
            −10·(0.3 - h)/0.3  if h < 0.3            host otherwise looks normal
            0                  otherwise / unknown
    risk_score = clip(round(100·raw + host), 0, 100)

``severity_id`` is the risk band (<20 → 1 Informational, <40 → 2 Low, <60 → 3 Medium,
<85 → 4 High, else 5 Critical) kept within ±1 of the strongest detector severity, so
evidence can move the detector's own judgement by one step. ``confidence`` is the
strongest detector confidence + 5 per additional finding (at most +15) ± 10 for a
high / normal host_behaviour score, clipped to 0–100.

**Counts.** ``count`` (and the byte volume in ``facts["bytes"]`` when a detector
reports one) is *summed* over findings whose evidence spans do not overlap what the
incident already covers and *max-ed* over overlapping ones: long-horizon detectors
re-report cumulative totals (summing would double count), window-level detectors
report disjoint windows (max-ing would undercount).

>>> from pipelines.detectors.base import Evidence, Finding
>>> def f(t, nbytes):
...     return Finding("exfil", "exfiltration", "10.0.0.5", "203.0.113.9", t, t + 300,
...                    0.9, 4, 80, ("T1048",), "Slow upload", "10.0.0.5 uploaded …",
...                    [Evidence("bytes_out_24h", nbytes, 1e6, 6.0, "B", "host median")],
...                    {"bytes": nbytes}, src="10.0.0.5", dst=("203.0.113.9",), count=3)
>>> book = IncidentBook()
>>> [i.status for i in book.add([f(0.0, 5e7)], "m1")]
['new']
>>> book.add([f(300.0, 5.1e7)], "m1")   # nothing material changed
[]
>>> [(i.status, i.revision) for i in book.add([f(4000.0, 2e8)], "m1")]   # volume grew 4x
[('update', 1)]
>>> len(book)
1
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipelines.detectors.base import Evidence, Finding

__all__ = ["Incident", "IncidentBook", "incident_uid", "score_incident"]

#: keys of ``Finding.facts`` read as a byte volume (first present wins)
BYTES_KEYS = ("bytes", "bytes_out", "upload_bytes", "bytes_total")


def incident_uid(
    detector: str, entity: str, episode: str, first_window: float, model_version: str
) -> str:
    """Deterministic UUID-formatted id of an incident.

    >>> incident_uid("exfil", "10.0.0.5", "203.0.113.9", 1200.7, "m1") == incident_uid(
    ...     "exfil", "10.0.0.5", "203.0.113.9", 1200.0, "m1")
    True
    >>> len(incident_uid("exfil", "10.0.0.5", "", 0.0, "m1"))
    36
    """
    key = f"{detector}|{entity}|{episode}|{math.floor(first_window)}|{model_version}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


@dataclass(slots=True)
class Incident:
    """One alert: the state of an incident at one revision (see module docstring)."""

    uid: str
    detector: str
    kind: str
    entity: str
    episode: str
    first_window: float  #: start of the first finding (event time) — part of the uid
    start: float  #: earliest evidence time
    end: float  #: latest evidence time
    revision: int = 0  #: 0 when created, +1 per emitted update
    findings_n: int = 0
    score: float = 0.0  #: max finding score
    severity_id: int = 1
    confidence: int = 0
    risk_score: int = 0
    attacks: tuple[str, ...] = ()
    title: str = ""
    sentence: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    src: str = ""
    dst: tuple[str, ...] = ()
    dst_ports: tuple[int, ...] = ()
    domain: str = ""
    direction: str = "outbound"
    count: int = 0
    positions: tuple[tuple[str, int], ...] = ()
    analytic: str = "Statistical"
    model_version: str = ""
    snapshot_id: str = ""
    host_score: float | None = None
    status: str = "new"  #: "new" | "update" ("closed" only on incidents close_stale returns)
    created: float = 0.0  #: event time the incident was created (end of its first finding)
    max_z: float = 0.0  #: strongest |z| over all evidence seen
    max_severity: int = 1  #: strongest detector severity seen
    max_confidence: int = 0  #: strongest detector confidence seen
    sentence_score: float = 0.0  #: score of the finding the title/sentence came from

    def copy(self) -> Incident:
        """An independent copy (the book keeps mutating its own; facts values are shared)."""
        out = Incident.__new__(Incident)
        for name in _INCIDENT_FIELDS:
            setattr(out, name, getattr(self, name))
        out.evidence = [_copy_evidence(e) for e in self.evidence]
        out.facts = dict(self.facts)
        return out


_INCIDENT_FIELDS = tuple(f.name for f in fields(Incident))


def _copy_evidence(e: Evidence) -> Evidence:
    return Evidence(e.name, e.observed, e.baseline, e.z, e.unit, e.reference)


def score_incident(inc: Incident) -> tuple[int, int, int]:
    """``(risk_score, severity_id, confidence)`` of ``inc`` by the module formula.

    >>> inc = Incident("u", "d", "k", "e", "", 0.0, 0.0, 21600.0, findings_n=12, score=1.0,
    ...                max_z=10.0, max_severity=4, max_confidence=80)
    >>> score_incident(inc)
    (100, 5, 95)
    >>> inc.host_score = 0.0
    >>> score_incident(inc)
    (90, 5, 85)
    """
    z_f = min(1.0, abs(inc.max_z) / 10.0) if math.isfinite(inc.max_z) else 1.0
    n_f = min(1.0, math.log2(1 + max(inc.findings_n, 0)) / math.log2(13))
    d_f = min(1.0, max(inc.end - inc.start, 0.0) / 21600.0)
    score = min(max(inc.score, 0.0), 1.0) if math.isfinite(inc.score) else 0.0
    raw = 0.55 * score + 0.15 * z_f + 0.15 * n_f + 0.15 * d_f
    host = 0.0
    conf_adj = 0
    h = inc.host_score
    if h is not None and math.isfinite(h):
        if h > 0.7:
            host = 15.0 * (min(h, 1.0) - 0.7) / 0.3
            conf_adj = 10
        elif h < 0.3:
            host = -10.0 * (0.3 - max(h, 0.0)) / 0.3
            conf_adj = -10
    risk = int(min(100, max(0, round(100.0 * raw + host))))
    band = 1 if risk < 20 else 2 if risk < 40 else 3 if risk < 60 else 4 if risk < 85 else 5
    sev = int(min(max(band, inc.max_severity - 1), inc.max_severity + 1))
    sev = min(5, max(1, sev))
    conf = inc.max_confidence + 5 * min(3, max(inc.findings_n - 1, 0)) + conf_adj
    return risk, sev, int(min(100, max(0, conf)))


def _bytes_of(facts: Mapping[str, Any]) -> float:
    for k in BYTES_KEYS:
        v = facts.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
        if v is not None and hasattr(v, "item"):  # numpy scalar
            try:
                fv = float(v.item())
            except (TypeError, ValueError):
                continue
            if math.isfinite(fv):
                return fv
    return 0.0


def _union(a: tuple[Any, ...], b: Iterable[Any], cap: int) -> tuple[Any, ...]:
    out = list(a)
    seen = set(out)
    for x in b:
        if len(out) >= cap:
            break
        if x not in seen:
            seen.add(x)
            out.append(x)
    return tuple(out)


@dataclass(slots=True)
class _Open:
    """Book-keeping of one open incident (what was last emitted, when)."""

    inc: Incident
    touched: float  #: latest event time a finding arrived (orders eviction)
    volume: float = 0.0  #: running byte volume (sum/max rule)
    emitted_severity: int = 0
    emitted_risk: int = 0
    emitted_count: int = 0
    emitted_volume: float = 0.0
    emitted_attacks: tuple[str, ...] = ()
    emitted_at: float = -math.inf
    pending: bool = False  #: a material change is waiting for min_update_interval


class IncidentBook:
    """Groups findings into incidents and reports new / materially changed ones.

    Parameters: ``gap`` — seconds of event-time silence that end an episode;
    ``min_update_interval`` — minimum event-time seconds between two emitted updates
    driven by risk/count growth (severity rises and new techniques bypass it);
    ``max_open`` — cap on open incidents; ``risk_step`` — risk-score rise that counts
    as material; ``growth`` — count/volume factor that counts as material;
    ``max_dst`` / ``max_ports`` — bounds of the destination and port unions.
    """

    def __init__(
        self,
        gap: float = 86400.0,
        min_update_interval: float = 1800.0,
        max_open: int = 100_000,
        risk_step: int = 5,
        growth: float = 2.0,
        max_dst: int = 16,
        max_ports: int = 16,
    ):
        self.gap = gap
        self.min_update_interval = min_update_interval
        self.max_open = max_open
        self.risk_step = risk_step
        self.growth = growth
        self.max_dst = max_dst
        self.max_ports = max_ports
        #: (detector, entity, episode) -> open incident, least recently touched first
        self.open: dict[tuple[str, str, str], _Open] = {}
        self.created_total = 0
        self.updates_total = 0
        self.evicted_total = 0

    def __len__(self) -> int:
        return len(self.open)

    # -- ingest ---------------------------------------------------------------------
    def add(
        self,
        findings: Iterable[Finding],
        model_version: str,
        snapshot_id: str = "",
        host_scores: Mapping[str, float] | None = None,
    ) -> list[Incident]:
        """Merge ``findings``; return copies of incidents created or materially changed.

        Each incident appears at most once per call, in the order it was first touched.
        """
        touched: dict[tuple[str, str, str], bool] = {}  # key -> created in this call
        for f in findings:
            key = (f.detector, f.entity, f.episode)
            slot = self.open.get(key)
            if slot is not None and f.start - slot.inc.end > self.gap:
                # the previous episode went quiet for longer than gap: a new incident
                del self.open[key]
                slot = None
            if slot is None:
                slot = self._create(f, model_version)
                touched[key] = True
            else:
                self._merge(slot, f)
                touched.setdefault(key, False)
            self.open.pop(key, None)  # move to the back (most recently touched)
            self.open[key] = slot
            slot.touched = max(slot.touched, f.end)
            slot.inc.model_version = model_version
            slot.inc.snapshot_id = snapshot_id
            if host_scores is not None and f.entity in host_scores:
                slot.inc.host_score = float(host_scores[f.entity])

        out: list[Incident] = []
        for key, created in touched.items():
            slot = self.open.get(key)
            if slot is None:  # pragma: no cover - evicted within this call only if max_open tiny
                continue
            inc = slot.inc
            inc.risk_score, inc.severity_id, inc.confidence = score_incident(inc)
            if created:
                inc.status = "new"
                self.created_total += 1
                out.append(self._emit(slot))
            elif self._material(slot):
                inc.revision += 1
                inc.status = "update"
                self.updates_total += 1
                out.append(self._emit(slot))
        self._enforce_cap()
        return out

    def _create(self, f: Finding, model_version: str) -> _Open:
        inc = Incident(
            uid=incident_uid(f.detector, f.entity, f.episode, f.start, model_version),
            detector=f.detector,
            kind=f.kind,
            entity=f.entity,
            episode=f.episode,
            first_window=float(f.start),
            start=float(f.start),
            end=float(f.end),
            findings_n=1,
            score=float(f.score),
            attacks=tuple(dict.fromkeys(f.attacks)),
            title=f.title,
            sentence=f.sentence,
            evidence=[_copy_evidence(e) for e in f.evidence],
            facts=dict(f.facts),
            src=f.src or f.entity,
            dst=_union((), f.dst, self.max_dst),
            dst_ports=_union((), (int(p) for p in f.dst_ports), self.max_ports),
            domain=f.domain,
            direction=f.direction,
            count=int(f.count),
            positions=tuple(f.positions[:4]) + tuple(f.positions[4:][-4:]),
            analytic=f.analytic,
            model_version=model_version,
            created=float(f.end),
            max_z=max((abs(e.z) for e in f.evidence if math.isfinite(e.z)), default=0.0),
            max_severity=int(f.severity_id),
            max_confidence=int(f.confidence),
            sentence_score=float(f.score),
        )
        inc.positions = tuple(dict.fromkeys(inc.positions))
        return _Open(inc=inc, touched=float(f.end), volume=_bytes_of(f.facts))

    def _merge(self, slot: _Open, f: Finding) -> None:
        inc = slot.inc
        disjoint = f.start >= inc.end
        if disjoint:
            inc.count += int(f.count)
            slot.volume += _bytes_of(f.facts)
        else:
            inc.count = max(inc.count, int(f.count))
            slot.volume = max(slot.volume, _bytes_of(f.facts))
        inc.start = min(inc.start, float(f.start))
        inc.end = max(inc.end, float(f.end))
        inc.findings_n += 1
        inc.score = max(inc.score, float(f.score))
        inc.max_severity = max(inc.max_severity, int(f.severity_id))
        inc.max_confidence = max(inc.max_confidence, int(f.confidence))
        inc.max_z = max(
            inc.max_z, max((abs(e.z) for e in f.evidence if math.isfinite(e.z)), default=0.0)
        )
        inc.attacks = _union(inc.attacks, f.attacks, 64)
        if f.score >= inc.sentence_score - 0.05:  # latest, unless clearly weaker
            inc.title, inc.sentence, inc.sentence_score = f.title, f.sentence, float(f.score)
        inc.kind = f.kind
        inc.evidence = [_copy_evidence(e) for e in f.evidence]
        inc.facts.update(f.facts)
        inc.dst = _union(inc.dst, f.dst, self.max_dst)
        inc.dst_ports = _union(inc.dst_ports, (int(p) for p in f.dst_ports), self.max_ports)
        inc.domain = f.domain or inc.domain
        inc.direction = f.direction
        inc.analytic = f.analytic
        if f.src:
            inc.src = f.src
        merged = tuple(dict.fromkeys(inc.positions + tuple(f.positions)))
        inc.positions = merged if len(merged) <= 8 else merged[:4] + merged[-4:]

    def _material(self, slot: _Open) -> bool:
        inc = slot.inc
        if inc.severity_id > slot.emitted_severity:
            return True
        if any(a not in slot.emitted_attacks for a in inc.attacks):
            return True
        grew = (
            inc.risk_score >= slot.emitted_risk + self.risk_step
            or (inc.count > 0 and inc.count >= self.growth * max(slot.emitted_count, 1))
            or (slot.volume > 0 and slot.volume >= self.growth * max(slot.emitted_volume, 1.0))
        )
        if grew:
            slot.pending = True
        return slot.pending and inc.end - slot.emitted_at >= self.min_update_interval

    def _emit(self, slot: _Open) -> Incident:
        inc = slot.inc
        slot.emitted_severity = inc.severity_id
        slot.emitted_risk = inc.risk_score
        slot.emitted_count = inc.count
        slot.emitted_volume = slot.volume
        slot.emitted_attacks = inc.attacks
        slot.emitted_at = inc.end
        slot.pending = False
        return inc.copy()

    # -- memory bounds ----------------------------------------------------------------
    def close_stale(self, now: float) -> list[Incident]:
        """Drop incidents idle (no finding) for more than ``gap`` seconds before ``now``.

        Cheap when nothing is stale: the book is ordered by last activity, so the scan
        stops at the first incident still active. Returns the dropped incidents with
        ``status = "closed"`` (rendered as OCSF activity 3 Close if the caller wants to
        tell the SIEM; the engine may also just discard them).
        """
        closed: list[Incident] = []
        while self.open:
            key = next(iter(self.open))
            slot = self.open[key]
            if now - max(slot.touched, slot.inc.end) <= self.gap:
                break
            del self.open[key]
            slot.inc.status = "closed"
            closed.append(slot.inc)
        return closed

    def _enforce_cap(self) -> None:
        while len(self.open) > self.max_open:
            del self.open[next(iter(self.open))]
            self.evicted_total += 1

    def get(self, detector: str, entity: str, episode: str) -> Incident | None:
        """The open incident of ``(detector, entity, episode)``, if any (not a copy)."""
        slot = self.open.get((detector, entity, episode))
        return slot.inc if slot else None

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments."""
        return {
            "gap": self.gap,
            "min_update_interval": self.min_update_interval,
            "max_open": self.max_open,
            "risk_step": self.risk_step,
            "growth": self.growth,
            "max_dst": self.max_dst,
            "max_ports": self.max_ports,
        }

"""The one protocol every detector follows, and the :class:`Finding` it returns.

The engine cuts event time into windows (default 5 minutes). For each window it calls
``ingest`` with the records of that window (possibly several times), and once the
window is closed by the watermark it calls :meth:`Detector.process_window`, which

1. ``close(window)`` — turns what was accumulated into per-entity features,
2. ``score(features)`` — compares them with what was learnt **before** (pure: it must
   not change the detector), and
3. ``learn(features, findings)`` — updates the baselines, skipping or damping entities
   that scored anomalous (poisoning resistance).

Hyper-parameters are ``__init__`` arguments kept verbatim as attributes (see
:meth:`Detector.params`); state is plain attributes; detectors pickle; randomness is
seeded. Per-record work in ``ingest`` is vectorised; River models run per entity-window.

>>> class Quiet(Detector):
...     name = "quiet"
...     def __init__(self, limit: int = 3):
...         self.limit = limit
...         self.seen = 0
...     def ingest(self, flows, dns, window):
...         self.seen += len(flows)
...     def close(self, window):
...         n, self.seen = self.seen, 0
...         return n
...     def score(self, features):
...         return []
...     def learn(self, features, findings):
...         pass
>>> Quiet(limit=5).params()
{'limit': 5}
>>> Quiet().process_window(Window(0, 0.0, 300.0))
[]
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipelines.records import DnsBatch, FlowBatch

__all__ = ["Detector", "Evidence", "Finding", "Window"]


@dataclass(frozen=True, slots=True)
class Window:
    """A closed-open event-time interval ``[start, end)``; ``index = start // length``."""

    index: int
    start: float
    end: float

    @classmethod
    def of(cls, index: int, length: float) -> Window:
        """>>> Window.of(3, 300.0)
        Window(index=3, start=900.0, end=1200.0)
        """
        return cls(index, index * length, (index + 1) * length)


@dataclass(slots=True)
class Evidence:
    """One feature that made a finding: what was observed vs what is normal.

    ``baseline`` is the typical value in the same unit as ``observed`` (e.g. the
    host's median); ``z`` is the robust z-score (log scale for volumes); ``reference``
    says what the baseline is ("host 14-day median", "peer group median", ...).
    """

    name: str
    observed: float
    baseline: float
    z: float
    unit: str = ""
    reference: str = ""


@dataclass(slots=True)
class Finding:
    """What a detector reports for one entity in one window.

    ``entity`` is the internal host (or the key the detector tracks); ``episode`` further
    splits incidents of one entity (an external destination, a domain, "" for the host
    as a whole). ``score`` is the detector's strength in ``[0, 1]``; ``severity_id``
    follows OCSF (1 informational … 5 critical); ``confidence`` is 0–100.
    ``positions`` are (origin, offset) pairs of input records behind the finding (a
    bounded sample: the audit trail). ``sentence`` is one plain sentence for an analyst.
    """

    detector: str
    kind: str
    entity: str
    episode: str
    start: float
    end: float
    score: float
    severity_id: int
    confidence: int
    attacks: tuple[str, ...]
    title: str
    sentence: str
    evidence: list[Evidence] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    src: str = ""
    dst: tuple[str, ...] = ()
    dst_ports: tuple[int, ...] = ()
    domain: str = ""
    direction: str = "outbound"  # "outbound" | "lateral" | "inbound" | "internal"
    count: int = 0
    positions: tuple[tuple[str, int], ...] = ()
    analytic: str = (
        "Statistical"  # OCSF analytic type: "Statistical" | "Learning" | "Rule" | "Behavioral"
    )


class Detector(ABC):
    """Base class of all detectors (see module docstring for the protocol)."""

    #: detector name, used in findings, metrics, alert ids and config sections
    name: ClassVar[str]

    @abstractmethod
    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        """Accumulate records that belong to ``window`` (vectorised; O(batch))."""

    @abstractmethod
    def close(self, window: Window) -> Any:
        """Finish ``window``: return its per-entity features and reset the accumulators."""

    @abstractmethod
    def score(self, features: Any) -> list[Finding]:
        """Score ``features`` against what was learnt so far. Must not change ``self``."""

    @abstractmethod
    def learn(self, features: Any, findings: list[Finding]) -> None:
        """Update state from ``features``; entities in ``findings`` are not (or barely) learnt."""

    def process_window(self, window: Window) -> list[Finding]:
        """``close`` then ``score`` then ``learn``: score before learn."""
        features = self.close(window)
        findings = self.score(features)
        self.learn(features, findings)
        return findings

    def entities(self) -> int:
        """How many entities this detector currently tracks (for metrics)."""
        return 0

    def entity_score(self, entity: str) -> float | None:
        """An optional per-entity anomaly score of the last window (host_behaviour uses it)."""
        return None

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments, read back from the attributes of the same name."""
        sig = inspect.signature(type(self).__init__)
        return {
            p: getattr(self, p)
            for p in sig.parameters
            if p != "self" and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD
        }

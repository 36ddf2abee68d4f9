"""The engine: event-time windows over canonical batches, detectors, incidents.

One engine runs under every shell (``slowburn replay``, ``slowburn run``, the tests).
It knows nothing of where records came from. Time comes only from the records:

* event time is cut into windows of ``window`` seconds (index = ``floor(ts / window)``);
* the **watermark** is the largest record time seen minus ``lateness``; a window is
  closed once the watermark passes its end;
* records of still-open windows are buffered by the engine, so detectors see each
  window once, complete and time-sorted: ``ingest`` then ``process_window`` (score
  before learn), windows strictly in order, empty windows included (capped at
  ``max_empty_windows`` in a row, so a jump in time cannot stall the engine);
* a record older than the oldest open window (later than the allowance) is put into
  the oldest open window and counted in ``stats["late_records"]`` — never dropped.

Findings go through the allow-list :class:`Suppressor` and into the
:class:`~pipelines.incidents.IncidentBook`, which returns incidents that are new or
materially changed: those are the alerts.

>>> import numpy as np
>>> from pipelines.records import FlowBatch
>>> eng = Engine(EngineConfig(window=300.0, lateness=0.0), detectors=[])
>>> b = FlowBatch.from_columns({"ts_start": np.arange(0.0, 900.0, 60.0)})
>>> eng.process(b, DnsBatch.empty())
[]
>>> eng.stats["windows_closed"], eng.watermark
(2, 840.0)
>>> _ = eng.flush(); eng.stats["windows_closed"]
3
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipelines import __version__
from pipelines.allowlist import Suppressor
from pipelines.detectors.base import Detector, Finding, Window
from pipelines.incidents import Incident, IncidentBook
from pipelines.records import DnsBatch, FlowBatch

__all__ = ["Engine", "EngineConfig"]

log = logging.getLogger(__name__)

#: Version of the detectors' pickled state layout, part of :attr:`Engine.model_version`.
#: 2: columnar exfil/lateral/beacon/host_behaviour state (checkpoints of layout 1 are refused).
STATE_FORMAT = 2


@dataclass
class EngineConfig:
    """Engine settings (all in seconds of event time)."""

    window: float = 300.0
    lateness: float = 120.0
    max_empty_windows: int = 7 * 24 * 12
    incident_gap: float = 86400.0


@dataclass
class _Pending:
    flows: list[FlowBatch] = field(default_factory=list)
    dns: list[DnsBatch] = field(default_factory=list)


def _window_index(ts: np.ndarray, length: float) -> np.ndarray:
    return np.floor(ts / length).astype(np.int64)


class Engine:
    """Runs detectors over event-time windows and turns findings into incidents."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        detectors: Sequence[Detector] | None = None,
        suppressor: Suppressor | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        if detectors is None:
            from pipelines.detectors import available, make_detector

            detectors = [make_detector(name) for name in available()]
        self.detectors: list[Detector] = list(detectors)
        self.suppressor = suppressor or Suppressor()
        self.book = IncidentBook(gap=self.config.incident_gap)
        self.model_version = self._model_version()
        self.snapshot_id = ""
        self.max_ts = -math.inf
        self.next_close: int | None = None  # lowest window index not closed yet
        self.pending: dict[int, _Pending] = {}
        self.stats: dict[str, int] = {
            "flows": 0,
            "dns": 0,
            "late_records": 0,
            "windows_closed": 0,
            "windows_skipped": 0,
            "findings": 0,
            "suppressed": 0,
            "alerts": 0,
        }
        self.findings_by_detector: dict[str, int] = {d.name: 0 for d in self.detectors}
        self.alerts_by_detector: dict[str, int] = {d.name: 0 for d in self.detectors}

    # -- identity -------------------------------------------------------------------
    def _model_version(self) -> str:
        """``<code version>+s<state format>+<hash of engine config and detector parameters>``.

        Stable across runs with the same configuration, so alert ids are reproducible.
        :data:`STATE_FORMAT` changes whenever a detector's pickled state layout does, so a
        checkpoint written by an older layout is refused on restore instead of misread.
        """
        desc = {
            "engine": asdict(self.config),
            "detectors": {d.name: d.params() for d in self.detectors},
        }
        digest = hashlib.sha256(json.dumps(desc, sort_keys=True, default=repr).encode()).hexdigest()
        return f"{__version__}+s{STATE_FORMAT}+{digest[:10]}"

    @property
    def watermark(self) -> float:
        return self.max_ts - self.config.lateness

    # -- input ------------------------------------------------------------------------
    def process(self, flows: FlowBatch, dns: DnsBatch | None = None) -> list[Incident]:
        """Add a batch; close every window the watermark has passed; return alerts."""
        dns = dns if dns is not None else DnsBatch.empty()
        self._buffer(flows, flows.ts_start, is_flow=True)
        self._buffer(dns, dns.ts, is_flow=False)
        self.stats["flows"] += len(flows)
        self.stats["dns"] += len(dns)
        if not math.isfinite(self.max_ts):
            return []
        limit = math.floor(self.watermark / self.config.window)  # windows < limit are closable
        return self._close_until(limit)

    def _buffer(self, batch: Any, ts: np.ndarray, is_flow: bool) -> None:
        if not len(batch):
            return
        finite = np.isfinite(ts)
        if not finite.all():  # decoders dead-letter these; never let one poison the watermark
            batch, ts = batch.take(finite), ts[finite]
            if not len(batch):
                return
        idx = _window_index(ts, self.config.window)
        if self.next_close is None:
            self.next_close = int(idx.min())
        late = idx < self.next_close
        if late.any():
            self.stats["late_records"] += int(late.sum())
            idx = np.where(late, self.next_close, idx)
        self.max_ts = max(self.max_ts, float(ts.max()))
        order = np.argsort(idx, kind="stable")
        if not bool(np.all(order == np.arange(len(order)))):
            batch, idx = batch.take(order), idx[order]
        bounds = np.flatnonzero(np.diff(idx)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(idx)]])
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            piece = batch.take(slice(a, b))
            slot = self.pending.setdefault(int(idx[a]), _Pending())
            (slot.flows if is_flow else slot.dns).append(piece)

    # -- windows ----------------------------------------------------------------------
    def _close_until(self, limit: int) -> list[Incident]:
        if self.next_close is None:
            return []
        alerts: list[Incident] = []
        while self.next_close < limit:
            if self.next_close not in self.pending:
                # skip a long run of empty windows (a jump in event time), keeping the last ones
                nxt = min(self.pending) if self.pending else limit
                run = min(nxt, limit) - self.next_close
                if run > self.config.max_empty_windows:
                    skip = run - self.config.max_empty_windows
                    self.stats["windows_skipped"] += skip
                    self.next_close += skip
            alerts.extend(self._close_window(self.next_close))
            self.next_close += 1
        return alerts

    def _close_window(self, index: int) -> list[Incident]:
        window = Window.of(index, self.config.window)
        slot = self.pending.pop(index, None) or _Pending()
        flows = FlowBatch.concat(slot.flows).sorted_by_time()
        dns = DnsBatch.concat(slot.dns).sorted_by_time()
        findings: list[Finding] = []
        for det in self.detectors:
            if len(flows) or len(dns):
                det.ingest(flows, dns, window)
            found = det.process_window(window)
            self.findings_by_detector[det.name] = self.findings_by_detector.get(det.name, 0) + len(
                found
            )
            findings.extend(found)
        self.stats["windows_closed"] += 1
        self.stats["findings"] += len(findings)
        kept = self.suppressor.filter(findings)
        self.stats["suppressed"] += len(findings) - len(kept)
        host_scores = self._host_scores(kept)
        alerts = self.book.add(kept, self.model_version, self.snapshot_id, host_scores)
        self.book.close_stale(window.end)
        for a in alerts:
            self.alerts_by_detector[a.detector] = self.alerts_by_detector.get(a.detector, 0) + 1
        self.stats["alerts"] += len(alerts)
        return alerts

    def _host_scores(self, findings: list[Finding]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for det in self.detectors:
            for f in findings:
                if f.entity in scores:
                    continue
                s = det.entity_score(f.entity)
                if s is not None:
                    scores[f.entity] = s
        return scores

    def flush(self) -> list[Incident]:
        """End of input: close every window that holds records."""
        if not self.pending:
            return []
        return self._close_until(max(self.pending) + 1)

    # -- introspection ----------------------------------------------------------------
    def entities(self) -> dict[str, int]:
        return {d.name: d.entities() for d in self.detectors}

    def buffered_records(self) -> int:
        return sum(
            sum(len(b) for b in p.flows) + sum(len(b) for b in p.dns) for p in self.pending.values()
        )

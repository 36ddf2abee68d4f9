"""Baseline-poisoning watch (MITRE ATLAS AML.T0020): adaptive vs frozen reference, per host.

A patient attacker can raise a host's outbound volume a little every day so that an
adaptive baseline follows and a final exfiltration looks normal. :class:`DriftMonitor`
keeps per host a **daily** robust baseline (:class:`~pipelines.baselines.RobustBaseline`,
which freezes a reference after ``reference_days`` days) and every day measures how far
the adaptive location walked away from the reference, in reference spreads, *relative to
the host's peers* (the median drift of all warm hosts: a network-wide change such as a
new software roll-out moves everyone). River ``drift.ADWIN`` runs on each host's relative
drift (one small detector per host, fed once a day) and confirms a sustained change.

A ``baseline_drift`` finding is raised when the relative drift of a feature passes
``threshold`` and either ADWIN flagged a change or the drift grew on ``persist_days``
consecutive days. Days whose total is far from the adaptive baseline (an exfiltration
day) are not learnt.

It is a component of :class:`~pipelines.detectors.host_behaviour.HostBehaviourDetector`
(which feeds it its per-host window features), not a detector of its own.

>>> m = DriftMonitor(("bytes_out",), reference_days=2)
>>> for day in range(3):
...     m.add(["a", "b"], np.array([[1e6], [2e6]]))
...     m.learn_day(m.close_day(day))
>>> m.day_findings(m.close_day(3), "host_behaviour")
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift as river_drift

from pipelines.baselines import RobustBaseline
from pipelines.detectors.base import Evidence, Finding

__all__ = ["DayRollup", "DriftMonitor"]

DAY = 86400.0


@dataclass
class DayRollup:
    """Per-host totals of one finished day."""

    day: int
    hosts: list[str]
    totals: np.ndarray  # (hosts, features)
    #: host -> bounded sample of (origin, offset) of its records that day (audit trail)
    positions: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)


class DriftMonitor:
    """Daily adaptive-vs-reference drift per host, relative to peers, confirmed by ADWIN."""

    def __init__(
        self,
        features: Sequence[str],
        reference_days: int = 3,
        daily_rate: float = 0.3,
        threshold: float = 2.0,
        persist_days: int = 3,
        learn_gate: float = 4.0,
        min_peers: int = 3,
        adwin_delta: float = 0.05,
        max_positions: int = 8,
    ) -> None:
        self.features = tuple(features)
        self.reference_days = reference_days
        self.daily_rate = daily_rate
        self.threshold = threshold
        self.persist_days = persist_days
        self.learn_gate = learn_gate
        self.min_peers = min_peers
        self.adwin_delta = adwin_delta
        self.max_positions = max_positions
        self.day_positions: dict[str, list[tuple[str, int]]] = {}
        self.daily = RobustBaseline(
            self.features,
            warmup=reference_days,
            rate=daily_rate,
            max_step=0.5,
            min_spread=0.15,
            init_spread=0.4,
        )
        self.sums: dict[str, np.ndarray] = {}
        self.adwin: dict[str, river_drift.ADWIN] = {}
        self.changed: dict[str, int] = {}  # host -> last day ADWIN flagged a change
        self.streak: dict[
            str, tuple[int, float]
        ] = {}  # host -> (days the drift grew in a row, last drift)

    def add(
        self,
        hosts: Sequence[str],
        x: np.ndarray,
        positions: Sequence[Sequence[tuple[str, int]]] | None = None,
    ) -> None:
        """Add one window's per-host features (columns = ``features``) to today's totals.

        ``positions`` (per host, (origin, offset) of its records) keeps a bounded sample
        per host and day: the audit trail of a ``baseline_drift`` finding.
        """
        for h, row in zip(hosts, np.asarray(x, dtype=np.float64), strict=True):
            acc = self.sums.get(h)
            if acc is None:
                self.sums[h] = row.copy()
            else:
                acc += row
        if positions is None:
            return
        keep = self.max_positions
        for h, pos in zip(hosts, positions, strict=True):
            if not pos:
                continue
            got = self.day_positions.setdefault(h, [])
            if len(got) < keep:
                got.extend(pos[: keep - len(got)])

    def close_day(self, day: int) -> DayRollup:
        hosts = sorted(self.sums)
        totals = (
            np.array([self.sums[h] for h in hosts]) if hosts else np.zeros((0, len(self.features)))
        )
        positions = {h: tuple(p) for h, p in self.day_positions.items()}
        self.sums, self.day_positions = {}, {}
        return DayRollup(day, hosts, totals, positions)

    def _relative(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.daily.drift(ids)
        all_ids = np.arange(len(self.daily), dtype=np.int64)
        warm = all_ids[self.daily.warm(all_ids)]
        if len(warm) > self.min_peers:
            peer = np.median(self.daily.drift(warm), axis=0)
        else:
            peer = np.zeros(len(self.features))
        return d - peer, peer

    def day_findings(self, roll: DayRollup, detector: str) -> list[Finding]:
        """Findings for a finished day (pure)."""
        if not roll.hosts:
            return []
        ids = self.daily.known(roll.hosts)
        warm = self.daily.warm(ids)
        if not warm.any():
            return []
        rel, peer = self._relative(ids)
        out = []
        for i in np.flatnonzero(warm).tolist():
            host = roll.hosts[i]
            k = int(np.argmax(rel[i]))
            r = float(rel[i, k])
            grew = self.streak.get(host, (0, 0.0))[0]
            adwin = self.changed.get(host, -(10**9)) >= roll.day - self.persist_days
            if r < self.threshold or not (adwin or grew >= self.persist_days):
                continue
            j = ids[i : i + 1]
            ref = float(self.daily.reference(j)[0, k])
            now = float(self.daily.typical(j)[0, k])
            name = self.features[k]
            score = min(1.0, 0.4 + 0.1 * r)
            sentence = (
                f"{host}'s learnt daily {name.replace('_', ' ')} moved from {ref:,.0f} to {now:,.0f} "
                f"({now / max(ref, 1.0):.1f}× its frozen reference, {r:.1f} reference spreads beyond its peers' drift"
                f"{', ADWIN change' if adwin else ''}, {grew} days rising) — a possible slow baseline-poisoning ramp."
            )
            out.append(
                Finding(
                    detector=detector, kind="baseline_drift", entity=host, episode=f"drift:{name}",
                    start=roll.day * DAY, end=(roll.day + 1) * DAY, score=round(score, 3),
                    severity_id=3 if r < 4 else 4, confidence=int(min(90, 40 + 10 * r)), attacks=(),
                    title=f"Baseline drift on {host} ({name})", sentence=sentence,
                    evidence=[Evidence(f"daily {name}", now, ref, round(r, 2), "per day",
                                       "frozen reference baseline (drift relative to peers)")],
                    facts={"feature": name, "relative_drift": round(r, 2), "peer_drift": round(float(peer[k]), 2),
                           "reference": ref, "adaptive": now, "rising_days": grew, "adwin": adwin,
                           "atlas": "AML.T0020", "day_total": float(roll.totals[i, k])},
                    src=host, direction="internal", count=1, analytic="Statistical",
                    positions=roll.positions.get(host, ()),
                )
            )  # fmt: skip
        return out

    def learn_day(self, roll: DayRollup) -> None:
        """Learn a finished day (skipping totals far from the adaptive baseline), update ADWIN."""
        if not roll.hosts:
            return
        ids = self.daily.ids(roll.hosts)
        was_warm = self.daily.warm(ids)
        z = self.daily.z(ids, roll.totals)
        allow = ~(was_warm & (np.abs(z).max(axis=1) > self.learn_gate))
        self.daily.learn(ids, roll.totals, allow, t=roll.day)
        rel, _ = self._relative(ids)
        for i, host in enumerate(roll.hosts):
            if not self.daily.warm(ids[i : i + 1])[0]:
                continue
            r = float(rel[i].max())
            days, last = self.streak.get(host, (0, 0.0))
            self.streak[host] = (days + 1 if r > last + 1e-6 and r > 0 else 0, r)
            det = self.adwin.get(host)
            if det is None:
                det = self.adwin[host] = river_drift.ADWIN(
                    delta=self.adwin_delta, clock=1, min_window_length=2, grace_period=4
                )
            det.update(r)
            if det.drift_detected:
                self.changed[host] = roll.day

    def forget(self, hosts: Sequence[str]) -> None:
        for h in hosts:
            self.adwin.pop(h, None)
            self.changed.pop(h, None)
            self.streak.pop(h, None)

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("max_positions", 8)  # snapshots from before the audit-trail sample
        state.setdefault("day_positions", {})
        self.__dict__.update(state)

    def nbytes(self) -> int:
        return int(
            self.daily.nbytes()
            + 600 * len(self.adwin)
            + 120 * (len(self.streak) + len(self.changed))
            + 100 * sum(len(p) for p in self.day_positions.values())
        )

"""Host behaviour: one shared River HalfSpaceTrees over per-host deviation vectors.

For every internal host active in a window the detector computes a few features —
bytes out/in, connections, distinct destinations, distinct admin-service destinations,
DNS queries, failed connections — and their robust z-scores against the host's **own**
baseline (:class:`~pipelines.baselines.RobustBaseline`, log scale), plus an off-hours flag
from the host's learnt hour-of-day profile. The positive z-scores, clipped at ``z_cap``
and scaled into ``[0, 1]``, form the host-window's deviation vector. One shared,
seeded ``HalfSpaceTrees`` (not one per host) scores it **before** learning it; windows
that scored anomalous are learnt neither by the trees nor by the baselines.

The score is used to prioritise: :meth:`entity_score` gives the engine the host's score
of the last window, and the incident layer raises or lowers incident priority with it.
A ``host_anomaly`` finding (analytic "Learning") is raised only when the score passes
``threshold`` **and** at least ``min_features`` features deviate by ``z_min`` or more from
the host's median *and* exceed its own learnt high quantile (≈ p99) by ``high_margin``
(so a diurnal host's busy hours, or a patch job it runs every night, are not "strong").

It also runs the poisoning watch (:class:`~pipelines.detectors.drift.DriftMonitor`):
``baseline_drift`` findings when a host's adaptive daily baseline walks away from its
frozen reference faster than its peers'.

>>> det = HostBehaviourDetector(seed=1)
>>> det.process_window(Window(0, 0.0, 300.0)), det.entity_score("10.0.0.1")
([], None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import anomaly

from pipelines.baselines import RobustBaseline
from pipelines.detectors.base import Detector, Evidence, Finding, Window
from pipelines.detectors.drift import DayRollup, DriftMonitor
from pipelines.detectors.lateral import KERBEROS, LDAP, admin_service
from pipelines.records import DnsBatch, FlowBatch
from pipelines.roles import HourProfile

__all__ = ["FEATURES", "HostBehaviourDetector"]

FEATURES = (
    "bytes_out",
    "bytes_in",
    "connections",
    "distinct_dsts",
    "admin_dsts",
    "dns_queries",
    "failed",
)
_UNITS = ("bytes", "bytes", "connections", "hosts", "hosts", "queries", "connections")
_FAILED = np.array(["S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR"], dtype=object)
_DRIFT_FEATURES = ("bytes_out", "bytes_in", "connections", "distinct_dsts")
DAY = 86400.0
MAX_POSITIONS = 8
Positions = tuple[tuple[str, int], ...]


def sample_positions(
    acc: dict[str, list[tuple[str, int]]],
    hosts: list[str],
    inv: np.ndarray,
    origin: np.ndarray,
    offset: np.ndarray,
    limit: int = MAX_POSITIONS,
) -> None:
    """Add to ``acc[host]`` the (origin, offset) of the host's first records, up to ``limit``.

    ``inv`` maps each record to its host (index into ``hosts``); records without an
    origin are skipped.

    >>> acc = {}
    >>> sample_positions(acc, ["a", "b"], np.array([0, 1, 0]), np.array(["f", "f", "f"], dtype=object),
    ...                  np.array([1, 2, 3]), limit=1)
    >>> acc
    {'a': [('f', 1)], 'b': [('f', 2)]}
    """
    if not len(inv):
        return
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(hosts) + 1)).tolist()
    for h, host in enumerate(hosts):
        got = acc.get(host)
        need = limit - (len(got) if got is not None else 0)
        a, b = bounds[h], bounds[h + 1]
        if need <= 0 or a == b:
            continue
        rows = order[a : min(b, a + need)]
        new = [
            (o, k) for o, k in zip(origin[rows].tolist(), offset[rows].tolist(), strict=True) if o
        ]
        if not new:
            continue
        if got is None:
            acc[host] = new
        else:
            got.extend(new)


@dataclass
class HostWindow:
    """Features of one window: hosts, raw values, and (filled by ``score``) their scores."""

    window: Window
    hosts: list[str]
    x: np.ndarray
    off: np.ndarray
    rollup: DayRollup | None = None
    positions: dict[str, Positions] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    anomalous: set[str] = field(default_factory=set)


class HostBehaviourDetector(Detector):
    """Shared HalfSpaceTrees over host deviation vectors + baseline-drift watch."""

    name = "host_behaviour"

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
        warmup_days: float = 1.0,
        warmup_windows: int = 96,
        baseline_rate: float = 0.02,
        high_margin: float = 1.5,
        high_step: float = 0.2,
        threshold: float = 0.9,
        min_features: int = 4,
        z_min: float = 3.0,
        z_cap: float = 8.0,
        utc_offset_hours: float = 0.0,
        drift_reference_days: int = 3,
        drift_threshold: float = 2.0,
        drift_persist_days: int = 3,
        idle_days: float = 30.0,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.warmup_days = warmup_days
        self.warmup_windows = warmup_windows
        self.baseline_rate = baseline_rate
        self.high_margin = high_margin
        self.high_step = high_step
        self.threshold = threshold
        self.min_features = min_features
        self.z_min = z_min
        self.z_cap = z_cap
        self.utc_offset_hours = utc_offset_hours
        self.drift_reference_days = drift_reference_days
        self.drift_threshold = drift_threshold
        self.drift_persist_days = drift_persist_days
        self.idle_days = idle_days
        self.model = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.learnt = 0
        self.baseline = RobustBaseline(FEATURES, warmup=warmup_windows, rate=baseline_rate)
        self.hours = HourProfile(utc_offset_hours)
        # hours of day at which each host already deviated strongly on an earlier day (nightly jobs)
        self.routine = HourProfile(utc_offset_hours, share=0.0, min_windows=0)
        self.drift = DriftMonitor(
            _DRIFT_FEATURES,
            reference_days=drift_reference_days,
            threshold=drift_threshold,
            persist_days=drift_persist_days,
        )
        self.day = -(10**9)
        self.q_hi = np.zeros(
            (0, len(FEATURES)), dtype=np.float32
        )  # per-host p99 (log1p), by baseline row
        self.first_seen = np.zeros(0, dtype=np.float64)  # by baseline row
        self.last_scores: dict[str, float] = {}
        self._acc: dict[str, np.ndarray] = {}
        self._pos: dict[str, list[tuple[str, int]]] = {}  # audit-trail sample per host, this window

    # -- ingest ---------------------------------------------------------------------
    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        if len(flows):
            m = flows.src_inside
            if m.any():
                src, dst = flows.src[m], flows.dst[m]
                hosts, si = np.unique(src, return_inverse=True)
                n = len(hosts)
                _, di = np.unique(dst, return_inverse=True)
                pair = np.unique(si.astype(np.int64) * (int(di.max()) + 1) + di) // (
                    int(di.max()) + 1
                )
                svc = admin_service(flows.dst_port[m])
                adm = (svc >= 0) & (svc != LDAP) & (svc != KERBEROS) & flows.dst_inside[m]
                apair = np.unique(si[adm].astype(np.int64) * (int(di.max()) + 1) + di[adm]) // (
                    int(di.max()) + 1
                )
                failed = np.isin(flows.conn_state[m], _FAILED)
                cols = np.stack(
                    [
                        np.bincount(si, flows.bytes_out[m].astype(np.float64), n),
                        np.bincount(si, flows.bytes_in[m].astype(np.float64), n),
                        np.bincount(si, minlength=n).astype(np.float64),
                        np.bincount(pair, minlength=n).astype(np.float64),
                        np.bincount(apair, minlength=n).astype(np.float64),
                        np.zeros(n),
                        np.bincount(si, failed.astype(np.float64), n),
                    ],
                    axis=1,
                )
                names = hosts.tolist()
                self._add(names, cols)
                sample_positions(self._pos, names, si, flows.origin[m], flows.offset[m])
        if len(dns):
            m = dns.src_inside
            if m.any():
                hosts, di, counts = np.unique(dns.src[m], return_inverse=True, return_counts=True)
                cols = np.zeros((len(hosts), len(FEATURES)))
                cols[:, 5] = counts
                names = hosts.tolist()
                self._add(names, cols)
                sample_positions(self._pos, names, di, dns.origin[m], dns.offset[m])

    def _add(self, hosts: list[str], cols: np.ndarray) -> None:
        for h, row in zip(hosts, cols, strict=True):
            acc = self._acc.get(h)
            if acc is None:
                self._acc[h] = row.copy()
            else:
                acc += row

    # -- window protocol ------------------------------------------------------------------
    def close(self, window: Window) -> HostWindow:
        day = int((window.start + self.utc_offset_hours * 3600.0) // DAY)
        rollup = None
        if day != self.day:
            if self.day > -(10**9):
                rollup = self.drift.close_day(self.day)
            self.day = day
        hosts = sorted(self._acc)
        x = np.array([self._acc[h] for h in hosts]) if hosts else np.zeros((0, len(FEATURES)))
        off = np.array([self.hours.off_hours(h, window.start) for h in hosts], dtype=bool)
        positions = {h: tuple(p) for h, p in self._pos.items()}
        self._acc, self._pos = {}, {}
        return HostWindow(window, hosts, x, off, rollup, positions)

    def _vectors(self, feats: HostWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = self.baseline.known(feats.hosts)
        z = self.baseline.z(ids, feats.x)
        unit = np.clip(z, 0.0, self.z_cap) / self.z_cap
        vec = np.concatenate([unit, feats.off[:, None].astype(np.float64)], axis=1)
        return ids, z, vec

    def score(self, features: HostWindow) -> list[Finding]:
        out: list[Finding] = []
        if features.rollup is not None:
            out.extend(self.drift.day_findings(features.rollup, self.name))
        if not features.hosts:
            return out
        ids, z, vec = self._vectors(features)
        warm = self._warm(ids, features.window.start)
        model_ready = self.learnt >= self.window_size
        strong_m = self._strong(ids, features.x, z)
        for i, host in enumerate(features.hosts):
            s = float(self.model.score_one(self._dict(vec[i]))) if model_ready else 0.0
            features.scores[host] = s
            strong = int(strong_m[i].sum())
            if not (
                warm[i] and model_ready and s >= self.threshold and strong >= self.min_features
            ):
                continue
            if self._routine(host, features.window.start):
                continue  # the same hour on an earlier day: a routine job, learnt as normal
            features.anomalous.add(
                host
            )  # scored anomalous: learnt neither by the trees nor the baselines
            out.append(self._finding(features, i, host, s, z[i], ids[i : i + 1], strong_m[i]))
        return out

    def _warm(self, ids: np.ndarray, t: float) -> np.ndarray:
        """Baseline warm **and** first seen at least ``warmup_days`` ago (a whole day cycle)."""
        ok = (ids >= 0) & (ids < len(self.first_seen))
        seen = np.full(len(ids), np.inf)
        seen[ok] = self.first_seen[ids[ok]]
        return self.baseline.warm(ids) & (t - seen >= self.warmup_days * DAY)

    def _strong(self, ids: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Features that deviate by ``z_min`` from the host's median **and** exceed its learnt
        high quantile (≈ p99) by ``high_margin``: a diurnal host's busy hours are not strong."""
        q = np.full(z.shape, np.inf)
        ok = (ids >= 0) & (ids < len(self.q_hi))
        q[ok] = self.q_hi[ids[ok]]
        lx = np.log1p(np.maximum(x, 0.0))
        return (z >= self.z_min) & (lx > q + np.log(self.high_margin))

    def _finding(
        self,
        feats: HostWindow,
        i: int,
        host: str,
        s: float,
        z: np.ndarray,
        j: np.ndarray,
        strong: np.ndarray,
    ) -> Finding:
        w = feats.window
        typical = self.baseline.typical(j)[0]
        order = np.argsort(-z)[: self.min_features + 1]
        top = [k for k in order.tolist() if strong[k]]
        parts = [
            f"{FEATURES[k].replace('_', ' ')} {feats.x[i, k]:,.0f} vs usual {typical[k]:,.0f}"
            for k in top
        ]
        off = " during its off-hours" if feats.off[i] else ""
        sentence = f"{host} behaved unlike its own baseline{off} (host-behaviour score {s:.2f}): {'; '.join(parts)}."
        ev = [
            Evidence(FEATURES[k], float(feats.x[i, k]), float(typical[k]), round(float(z[k]), 2), _UNITS[k],
                     "host baseline")
            for k in top
        ]  # fmt: skip
        ev.append(
            Evidence(
                "host-behaviour score", round(s, 3), self.threshold, 0.0, "score", "HalfSpaceTrees"
            )
        )
        return Finding(
            detector=self.name, kind="host_anomaly", entity=host, episode="", start=w.start, end=w.end,
            score=round(s, 3), severity_id=2, confidence=int(min(80, 30 + 50 * s)), attacks=(),
            title=f"Unusual behaviour of {host}", sentence=sentence, evidence=ev,
            facts={"hst_score": round(s, 3), "features": {FEATURES[k]: float(feats.x[i, k]) for k in top},
                   "off_hours": bool(feats.off[i])},
            src=host, direction="internal", count=int(feats.x[i, 2]), analytic="Learning",
            positions=feats.positions.get(host, ()),
        )  # fmt: skip

    def learn(self, features: HostWindow, findings: list[Finding]) -> None:
        if features.rollup is not None:
            self.drift.learn_day(features.rollup)
            self._evict(features.window, features.rollup.day)
        flagged = {f.entity for f in findings} | features.anomalous
        if not features.hosts:
            self.last_scores = {}
            return
        ids, _z, vec = self._vectors(features)
        calm = np.array([h not in flagged for h in features.hosts], dtype=bool)
        ids = self.baseline.ids(features.hosts)
        fresh_rows = self.baseline.samples(ids) == 0
        self.baseline.learn(ids, features.x, calm, t=features.window.index)
        self._learn_high(ids, features.x, calm, fresh_rows)
        self.first_seen[ids] = np.minimum(self.first_seen[ids], features.window.start)
        self.hours.observe(
            [h for h, c in zip(features.hosts, calm.tolist(), strict=True) if c],
            features.window.start,
        )
        strong_m = self._strong(ids, features.x, _z)
        strong = [
            h
            for h, row in zip(features.hosts, strong_m, strict=True)
            if int(row.sum()) >= self.min_features
        ]
        fresh = [h for h in strong if not self._routine(h, features.window.start)]
        if fresh:
            self.routine.observe(fresh, features.window.start)
        self.drift.add(
            features.hosts,
            features.x[:, [FEATURES.index(f) for f in _DRIFT_FEATURES]],
            [features.positions.get(h, ()) for h in features.hosts],
        )
        for i in np.flatnonzero(calm).tolist():
            self.model.learn_one(self._dict(vec[i]))
            self.learnt += 1
        self.last_scores = dict(features.scores)

    def _evict(self, w: Window, day: int) -> None:
        """Forget hosts idle for ``idle_days`` (rows of the baseline are reused: clear ours too)."""
        length = max(w.end - w.start, 1e-9)
        older = int(w.index - self.idle_days * DAY / length)
        live = np.array(sorted(self.baseline.index.values()), dtype=np.int64)
        stale = live[self.baseline.last_seen[live] < older] if len(live) else live
        if len(stale):
            names = [self.baseline.names[j] for j in stale.tolist()]
            self.baseline.reset(stale)
            ok = stale[stale < len(self.q_hi)]
            self.q_hi[ok] = 0.0
            self.first_seen[ok] = np.inf
            self.drift.forget(names)
        before = w.start - self.idle_days * DAY
        self.hours.evict(before)
        self.routine.evict(before)
        self.drift.daily.evict(int(day - self.idle_days))

    def _learn_high(
        self, ids: np.ndarray, x: np.ndarray, calm: np.ndarray, fresh: np.ndarray
    ) -> None:
        """Stochastic p99 tracker per host and feature (log scale), from calm windows."""
        need = len(self.baseline.n)
        if len(self.q_hi) < need:
            pad = np.zeros((need - len(self.q_hi), len(FEATURES)), dtype=np.float32)
            self.q_hi = np.concatenate([self.q_hi, pad])
            self.first_seen = np.concatenate(
                [self.first_seen, np.full(need - len(self.first_seen), np.inf)]
            )
        rows = ids[calm]
        if not len(rows):
            return
        lx = np.log1p(np.maximum(x[calm], 0.0))
        q = self.q_hi[rows].astype(np.float64)
        step = self.high_step * (0.99 - (lx <= q))
        self.q_hi[rows] = np.where(fresh[calm][:, None], lx, q + step).astype(np.float32)

    def _routine(self, host: str, t: float) -> bool:
        """Whether the host deviated strongly at this hour of day on an earlier day."""
        j = self.routine.rows.row(host, create=False)
        if j < 0:
            return False
        hour = int(((t + self.utc_offset_hours * 3600.0) % DAY) // 3600.0)
        return (
            bool(self.routine.rows.data[j, hour] > 0)
            and float(self.routine.rows.last[j]) < t - 6 * 3600.0
        )

    @staticmethod
    def _dict(v: np.ndarray) -> dict[str, float]:
        return {f"f{k}": float(x) for k, x in enumerate(v.tolist())}

    # -- introspection --------------------------------------------------------------------------
    def entity_score(self, entity: str) -> float | None:
        return self.last_scores.get(entity)

    def entities(self) -> int:
        return len(self.baseline)

    def nbytes(self) -> int:
        """Approximate state size in bytes (the shared trees are counted once)."""
        trees = self.n_trees * (2 ** (self.height + 1)) * 64
        parts = (
            self.baseline.nbytes()
            + self.q_hi.nbytes
            + self.hours.nbytes()
            + self.routine.nbytes()
            + self.drift.nbytes()
        )
        return int(parts + trees)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_pos", {})  # snapshots from before the audit-trail sample
        self.__dict__.update(state)

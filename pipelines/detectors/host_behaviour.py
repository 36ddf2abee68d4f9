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
from itertools import repeat
from typing import Any

import numpy as np
from river import anomaly

from pipelines.baselines import RobustBaseline
from pipelines.detectors._host_acc import (
    DayAccumulator,
    WindowAccumulator,
    WindowSums,
    codes,
    distinct_per,
    groups,
)
from pipelines.detectors._hst import BatchHalfSpaceTrees
from pipelines.detectors.base import Detector, Evidence, Finding, Window
from pipelines.detectors.drift import DayRollup, DriftMonitor
from pipelines.detectors.lateral import KERBEROS, LDAP, admin_service
from pipelines.records import DnsBatch, FlowBatch
from pipelines.roles import HourProfile, hour_of_day

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
_FAILED = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR"})
_DRIFT_FEATURES = ("bytes_out", "bytes_in", "connections", "distinct_dsts")
_DRIFT_COLS = [FEATURES.index(f) for f in _DRIFT_FEATURES]
DAY = 86400.0
MAX_POSITIONS = 8
Positions = tuple[tuple[str, int], ...]


@dataclass
class HostWindow:
    """Features of one window: hosts (sorted), raw values, and (filled by ``score``) their scores."""

    window: Window
    hosts: list[str]
    x: np.ndarray
    off: np.ndarray
    rollup: DayRollup | None = None
    sums: WindowSums | None = None  # position samples per host (audit trail)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    anomalous: set[str] = field(default_factory=set)
    #: (ids, z, vectors, detector, its learn count) as scored (reused by ``learn``)
    vectors: tuple[np.ndarray, np.ndarray, np.ndarray, object, int] | None = None
    #: the scored vectors, their tree paths and the model that walked them (reused by ``learn``)
    walked: tuple[np.ndarray, np.ndarray, object] | None = None

    def positions(self, i: int) -> Positions:
        """(origin, offset) sample of the records of host ``i``."""
        return self.sums.positions(i) if self.sums is not None else ()


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
        self.model = BatchHalfSpaceTrees(
            len(FEATURES) + 1, n_trees=n_trees, height=height, window_size=window_size, seed=seed
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
        self._last_score = np.zeros(0)  # by baseline row: score in the last window (NaN: absent)
        self._last_rows = np.zeros(0, dtype=np.int64)  # baseline rows of the last window
        self._acc = WindowAccumulator(len(FEATURES), MAX_POSITIONS)
        self._gen = 0  # learn() calls so far (tells ``learn`` whether scored vectors still hold)
        self._day = DayAccumulator(len(_DRIFT_FEATURES), self.drift.max_positions)

    # -- ingest ---------------------------------------------------------------------
    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        fm = flows.src_inside if len(flows) else np.zeros(0, dtype=bool)
        dm = dns.src_inside if len(dns) else np.zeros(0, dtype=bool)
        f_all, d_all = bool(fm.all()), bool(dm.all())
        src = flows.src if f_all else flows.src[fm]
        qsrc = dns.src if d_all else dns.src[dm]
        nf = len(src)
        if not nf + len(qsrc):
            return
        hosts, inv = groups(np.concatenate([src, qsrc]) if len(qsrc) else src)
        n = len(hosts)
        si, di = inv[:nf], inv[nf:]
        cols = np.zeros((n, len(FEATURES)))
        parts = []
        if nf:

            def col(a: np.ndarray) -> np.ndarray:
                return a if f_all else a[fm]

            dst = codes(col(flows.dst))
            svc = admin_service(col(flows.dst_port))
            adm = (svc >= 0) & (svc != LDAP) & (svc != KERBEROS) & col(flows.dst_inside)
            state = col(flows.conn_state).tolist()
            failed = np.fromiter(map(_FAILED.__contains__, state), np.float64, nf)
            cols[:, 0] = np.bincount(si, col(flows.bytes_out).astype(np.float64), n)
            cols[:, 1] = np.bincount(si, col(flows.bytes_in).astype(np.float64), n)
            cols[:, 2] = np.bincount(si, minlength=n)
            cols[:, 3] = distinct_per(si, dst, n)
            cols[:, 4] = distinct_per(si[adm], dst[adm], n)
            cols[:, 6] = np.bincount(si, failed, n)
            parts.append((si, col(flows.origin), col(flows.offset)))
        if len(di):
            cols[:, 5] = np.bincount(di, minlength=n)
            parts.append(
                (
                    di,
                    dns.origin if d_all else dns.origin[dm],
                    dns.offset if d_all else dns.offset[dm],
                )
            )
        self._acc.add(hosts, cols, parts)

    # -- window protocol ------------------------------------------------------------------
    def close(self, window: Window) -> HostWindow:
        day = int((window.start + self.utc_offset_hours * 3600.0) // DAY)
        rollup = None
        if day != self.day:
            if self.day > -(10**9):
                self._flush_day()
                rollup = self.drift.close_day(self.day)
            self.day = day
        sums = self._acc.close()
        hosts = sums.hosts.tolist()
        return HostWindow(window, hosts, sums.x, self._off_hours(hosts, window.start), rollup, sums)

    def _flush_day(self) -> None:
        """Hand the finished day's per-host totals and position samples to the drift watch."""
        rows, x, pos = self._day.flush()
        names = self.baseline.names
        self.drift.add([names[j] for j in rows.tolist()], x, pos)

    def _off_hours(self, hosts: list[str], t: float) -> np.ndarray:
        """:meth:`HourProfile.off_hours` of every host at ``t``, as one array operation
        (over the profile's row index and count rows; one call per host if it has none)."""
        prof = self.hours
        index = getattr(prof.rows, "index", None)
        if not isinstance(index, dict):
            return np.array([prof.off_hours(h, t) for h in hosts], dtype=bool)
        j = np.fromiter(map(index.get, hosts, repeat(-1)), np.int64, len(hosts))
        out = np.zeros(len(hosts), dtype=bool)
        ok = np.flatnonzero(j >= 0)
        if not len(ok):
            return out
        data = prof.rows.data[j[ok]]
        total = data.sum(axis=1).astype(np.float64)
        enough = total >= prof.min_windows
        at = data[enough, hour_of_day(t, prof.utc_offset_hours)].astype(np.float64)
        out[ok[enough]] = at / total[enough] < prof.share
        return out

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
        features.vectors = (ids, z, vec, self, self._gen)
        warm = self._warm(ids, features.window.start)
        model_ready = self.learnt >= self.window_size
        strong_m = self._strong(ids, features.x, z)
        n = len(features.hosts)
        if model_ready:
            paths = self.model.paths(vec)
            features.walked = (vec, paths, self.model)
            s = self.model.score_many(vec, paths)
        else:
            s = np.zeros(n)
        features.scores = s
        if not model_ready:
            return out
        strong = strong_m.sum(axis=1)
        cand = warm & (s >= self.threshold) & (strong >= self.min_features)
        for i in np.flatnonzero(cand).tolist():
            host = features.hosts[i]
            if self._routine(host, features.window.start):
                continue  # the same hour on an earlier day: a routine job, learnt as normal
            # scored anomalous: learnt neither by the trees nor the baselines
            features.anomalous.add(host)
            out.append(
                self._finding(features, i, host, float(s[i]), z[i], ids[i : i + 1], strong_m[i])
            )
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
            positions=feats.positions(i),
        )  # fmt: skip

    def learn(self, features: HostWindow, findings: list[Finding]) -> None:
        if features.rollup is not None:
            self.drift.learn_day(features.rollup)
            self._evict(features.window, features.rollup.day)
        flagged = {f.entity for f in findings} | features.anomalous
        got = features.vectors
        fresh_vectors = not (
            got is not None and got[3] is self and got[4] == self._gen and features.rollup is None
        )
        self._gen += 1
        self._last_score[self._last_rows] = np.nan  # before eviction may hand rows to new hosts
        self._last_rows = np.zeros(0, dtype=np.int64)
        if not features.hosts:
            return
        if fresh_vectors or got is None:
            ids, _z, vec = self._vectors(features)
        else:  # as scored: nothing learnt or evicted since
            ids, _z, vec = got[0], got[1], got[2]
        hosts = features.hosts
        if flagged:
            calm = np.array([h not in flagged for h in hosts], dtype=bool)
        else:
            calm = np.ones(len(hosts), dtype=bool)
        ids = self.baseline.ids(hosts)
        fresh_rows = self.baseline.samples(ids) == 0
        self.baseline.learn(ids, features.x, calm, t=features.window.index)
        self._learn_high(ids, features.x, calm, fresh_rows)
        self.first_seen[ids] = np.minimum(self.first_seen[ids], features.window.start)
        t = features.window.start
        self.hours.observe(
            hosts if calm.all() else [h for h, c in zip(hosts, calm.tolist(), strict=True) if c],
            t,
        )
        strong_m = self._strong(ids, features.x, _z)
        strong = np.flatnonzero(strong_m.sum(axis=1) >= self.min_features).tolist()
        fresh = [hosts[i] for i in strong if not self._routine(hosts[i], t)]
        if fresh:
            self.routine.observe(fresh, t)
        if features.sums is not None:
            self._day.add(ids, features.x[:, _DRIFT_COLS], features.sums)
        walked = features.walked
        if walked is not None and walked[2] is self.model and np.array_equal(walked[0], vec):
            self.model.learn_many(vec[calm], walked[1][:, :, calm])
        else:
            self.model.learn_many(vec[calm])
        self.learnt += int(calm.sum())
        if len(self._last_score) < len(self.first_seen):
            grow = len(self.first_seen) - len(self._last_score)
            self._last_score = np.concatenate([self._last_score, np.full(grow, np.nan)])
        self._last_score[ids] = features.scores
        self._last_rows = ids

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

    # -- introspection --------------------------------------------------------------------------
    def entity_score(self, entity: str) -> float | None:
        j = self.baseline.index.get(entity, -1)
        if not 0 <= j < len(self._last_score):
            return None
        s = float(self._last_score[j])
        return None if s != s else s  # NaN: not active in the last window

    def entities(self) -> int:
        return len(self.baseline)

    def nbytes(self) -> int:
        """Approximate state size in bytes (the shared trees are counted once)."""
        parts = (
            self.baseline.nbytes()
            + self.q_hi.nbytes
            + self.first_seen.nbytes
            + self.hours.nbytes()
            + self.routine.nbytes()
            + self.drift.nbytes()
            + self._day.nbytes()
            + self._last_score.nbytes
        )
        return int(parts + self.model.nbytes())

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("model"), anomaly.HalfSpaceTrees):  # snapshots of River's own trees
            names = [f"f{k}" for k in range(len(FEATURES) + 1)]
            state["model"] = BatchHalfSpaceTrees.from_river(state["model"], names)
        if isinstance(state.get("_acc"), dict):  # snapshots with per-host dicts
            state["_acc"] = _window_from_dicts(state["_acc"], state.pop("_pos", {}))
        if "last_scores" in state:
            last = state.pop("last_scores")
            index = state["baseline"].index
            rows = np.array([index.get(h, -1) for h in last], dtype=np.int64)
            score = np.full(len(state["first_seen"]), np.nan)
            ok = (rows >= 0) & (rows < len(score))
            score[rows[ok]] = np.array(list(last.values()), dtype=np.float64)[ok]
            state["_last_score"], state["_last_rows"] = score, rows[ok]
        state.setdefault("_gen", 0)
        if "_day" not in state:
            state["_day"] = DayAccumulator(len(_DRIFT_FEATURES), state["drift"].max_positions)
        self.__dict__.update(state)


def _window_from_dicts(
    acc: dict[str, np.ndarray], pos: dict[str, list[tuple[str, int]]]
) -> WindowAccumulator:
    """The open window of an older snapshot (host -> sums, host -> positions) as arrays."""
    out = WindowAccumulator(len(FEATURES), MAX_POSITIONS)
    for h, row in acc.items():
        got = pos.get(h, [])
        origin = np.array([o for o, _k in got], dtype=object)
        offset = np.array([k for _o, k in got], dtype=np.int64)
        inv = np.zeros(len(got), dtype=np.int64)
        out.add(np.array([h], dtype=object), row[None, :], [(inv, origin, offset)])
    return out

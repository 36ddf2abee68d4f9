"""Rolling per-host volume horizons (1 h / 6 h / 24 h / 7 d) with robust baselines and peers.

:class:`HostHorizons` keeps, per host, a fixed ring of hourly byte counts (float32, one
slot per hour, ``max(horizons) + 1`` slots: 676 bytes for the default 7-day horizon) and
one :class:`~pipelines.baselines.RobustBaseline` per horizon. Volumes are floored at
``floor_per_hour × H`` before they are learnt or scored: an idle night and a busy
morning would otherwise make a bimodal log-scale distribution whose spread hides
everything; above the floor the baseline describes the host's working volume. The trailing ``H``-hour
total at any moment is the current (partial) hour, the ``H - 1`` previous hours and the
not-yet-expired part of the hour ``H`` back (pro-rated), so a 1 h horizon really covers
the last 60 minutes.

Learning happens once per horizon *step* (``min(H, 24)`` hours): the 1 h total every
hour, the 6 h total every 6 hours, the 24 h and 7 d totals once a day — one sample per
host per step, and only once the host's history covers the horizon. Samples of a period
in which the host had a finding are skipped (:meth:`flag`).

Peer group: after each learning step, the median and MAD (× 1.4826) of the warm hosts'
baseline locations for that horizon — i.e. "what a typical host of this network sends in
H hours". A host that is far above both its own baseline and that typical host is
suspicious; one that is only above its own baseline (a quiet host doing ordinary work) is
not. Similar-activity peer groups were considered, but with a few hundred hosts the whole
network is the most stable reference.

>>> hz = HostHorizons(horizons=(1, 6), warmups=(3, 1), floor_per_hour=1e5)
>>> rows = hz.rows(["10.0.0.1"], hour=0)
>>> for hour in range(8):
...     hz.advance(hour)
...     hz.add(rows, np.array([1e6]))
...     hz.learn_hour(hour)
>>> bool(hz.warm(rows, hour=8, warmup_hours=6)[0])
True
>>> hz.advance(8)
>>> s = hz.score(rows, hour=8, frac=1.0, extra=np.array([5e8]))
>>> float(s.obs[0, 0]) >= 5e8, bool(s.z[0, 0] > 5), bool(s.z[0, 1] > 3)
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.baselines import RobustBaseline

__all__ = ["HorizonScores", "HostHorizons"]

_MAD_TO_SIGMA = 1.4826


@dataclass
class HorizonScores:
    """Per (host row, horizon) observations and scores, all shaped ``(rows, horizons)``."""

    obs: np.ndarray  # trailing total, bytes
    typical: np.ndarray  # own baseline location, bytes
    z: np.ndarray  # robust z vs own baseline (log scale)
    warm: np.ndarray  # own baseline warm
    peer_typical: np.ndarray  # peer location, bytes (per horizon, broadcast)
    peer_z: np.ndarray  # robust z vs peers
    samples: np.ndarray  # samples learnt per horizon


class HostHorizons:
    """Hourly byte ring + robust baselines per horizon + peer statistics (see module doc).

    Storage (all row-addressed, one name index shared by the four baselines):

    * ``cur`` — float32 bytes of the current hour per host (what the dense ring's current
      slot held; it accumulates in float32 exactly as the ring did);
    * ``cols`` — the ``slots - 1`` previous hours, one column per hour that had any bytes:
      ``(rows, values)`` (int32 rows, sorted; float32) when fewer than half the hosts were
      active, else a dense float32 column. An idle hour costs nothing, a host active one
      hour in ten costs ~1 byte per hour instead of 4;
    * ``tails`` — per horizon ``H >= 2`` the float64 sum of the ``H - 1`` complete hours
      before the current one (recomputed when the hour advances, not pickled).

    Byte counts are integers, so float32 hour values are integer-valued and every float64
    sum of them is exact (below 2**53): sums in any order equal the dense ring's cumsum.
    """

    def __init__(
        self,
        horizons: Sequence[int] = (1, 6, 24, 168),
        warmups: Sequence[int] = (24, 4, 3, 4),
        rate: float = 0.05,
        max_step: float = 0.5,
        min_spread: float = 0.25,
        floor_per_hour: float = 1e6,
    ) -> None:
        self.horizons = tuple(int(h) for h in horizons)
        self.floor_per_hour = floor_per_hour
        self.warmups = tuple(int(w) for w in warmups)
        self.slots = max(self.horizons) + 1
        self.base = [
            RobustBaseline(
                ("bytes",), warmup=w, rate=rate, max_step=max_step, min_spread=min_spread
            )
            for w in self.warmups
        ]
        self.min_spread = min_spread
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.cur = np.zeros(0, dtype=np.float32)
        self.cols: dict[int, tuple[np.ndarray | None, np.ndarray]] = {}
        self.tails = np.zeros((len(self.horizons), 0))
        self.first_hour = np.zeros(0, dtype=np.int32)
        self.flags = np.zeros(0, dtype=np.uint8)  # bit i: finding during horizon i's period
        self.last_hour = np.zeros(0, dtype=np.int32)  # last hour the host was seen
        self.free: list[int] = []  # rows of evicted hosts, reused first
        self.hour = -1
        self.peer_loc = np.zeros(len(self.horizons))
        self.peer_spread = np.full(len(self.horizons), 1.0)
        self.peer_n = np.zeros(len(self.horizons), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    # -- bookkeeping -----------------------------------------------------------------
    def rows(self, hosts: Sequence[str], hour: int) -> np.ndarray:
        """Row of each host, adding unknown hosts (their history starts at ``hour``)."""
        index = self.index
        get = index.get
        out = np.fromiter((get(h, -1) for h in hosts), dtype=np.int64, count=len(hosts))
        miss = np.flatnonzero(out < 0)
        if len(miss):
            names, free = self.names, self.free
            for i in miss.tolist():
                h = hosts[i]
                r = index.get(h)
                if r is None:
                    if free:
                        r = free.pop()
                        names[r] = h
                    else:
                        r = len(names)
                        names.append(h)
                    index[h] = r
                out[i] = r
            n = len(names)
            for b in self.base:
                b.ensure(n)
            cap = len(self.first_hour)
            if n > cap:
                grow = max(n, cap + cap // 4, 64) - cap
                self.cur = np.concatenate([self.cur, np.zeros(grow, np.float32)])
                self.tails = np.concatenate([self.tails, np.zeros((len(self.horizons), grow))], 1)
                self.first_hour = np.concatenate([self.first_hour, np.full(grow, -1, np.int32)])
                self.flags = np.concatenate([self.flags, np.zeros(grow, np.uint8)])
                self.last_hour = np.concatenate([self.last_hour, np.zeros(grow, np.int32)])
            fresh = out[self.first_hour[out] < 0]
            self.first_hour[fresh] = hour
        self.last_hour[out] = hour
        return out

    def evict(self, older_than: int) -> np.ndarray:
        """Forget hosts not seen since hour ``older_than``; return their (now free) rows.

        >>> hz = HostHorizons((1,), (1,))
        >>> _ = hz.rows(["a", "b"], 0); _ = hz.rows(["b"], 50)
        >>> hz.evict(older_than=10).tolist(), len(hz), hz.rows(["c"], 60).tolist()
        ([0], 1, [0])
        """
        live = np.array(sorted(self.index.values()), dtype=np.int64)
        if not len(live):
            return live
        stale = live[self.last_hour[live] < older_than]
        if not len(stale):
            return stale
        for r in stale.tolist():
            del self.index[self.names[r]]
            self.names[r] = ""
            self.free.append(r)
        for b in self.base:
            b.clear(stale)
        self.cur[stale] = 0.0
        for h, (rows, vals) in list(self.cols.items()):
            if rows is None:
                vals[stale[stale < len(vals)]] = 0.0
            else:
                keep = ~np.isin(rows, stale)
                self.cols[h] = (rows[keep], vals[keep])
        self.tails[:, stale] = 0.0
        self.first_hour[stale] = -1
        self.flags[stale] = 0
        return stale

    def known(self, hosts: Sequence[str]) -> np.ndarray:
        get = self.index.get
        return np.fromiter((get(h, -1) for h in hosts), dtype=np.int64, count=len(hosts))

    def _column(self, hour: int, rows: np.ndarray) -> np.ndarray:
        """float64 bytes of ``rows`` in ``hour`` (current or past; 0 outside the ring)."""
        if hour == self.hour:
            return self.cur[rows].astype(np.float64)
        out = np.zeros(len(rows))
        col = self.cols.get(hour)
        if col is None or hour > self.hour or hour <= self.hour - self.slots:
            return out
        have, vals = col
        if have is None:
            ok = rows < len(vals)
            out[ok] = vals[rows[ok]]
        elif len(have):
            pos = np.minimum(np.searchsorted(have, rows), len(have) - 1)
            hit = have[pos] == rows
            out[hit] = vals[pos[hit]]
        return out

    def _refresh_tails(self) -> None:
        """``tails[i]`` = bytes of the ``H_i - 1`` complete hours before the current one."""
        t = np.zeros(len(self.cur))
        done = 1  # hours back already summed into t (hour - 1 .. hour - done + 1)
        self.tails = np.zeros((len(self.horizons), len(self.cur)))
        for i in np.argsort(self.horizons, kind="stable").tolist():
            h = self.horizons[i]
            for back in range(done, h):
                col = self.cols.get(self.hour - back)
                if col is None:
                    continue
                rows, vals = col
                if rows is None:
                    t[: len(vals)] += vals
                else:
                    t[rows] += vals
            done = max(done, h)
            self.tails[i] = t

    def advance(self, hour: int) -> None:
        """Move the clock to ``hour``: the current hour becomes a past column."""
        if hour <= self.hour:
            return
        n = len(self.names)
        cur = self.cur[:n]
        nz = np.flatnonzero(cur)
        if len(nz) and hour - self.hour < self.slots:
            if 2 * len(nz) < n:
                self.cols[self.hour] = (nz.astype(np.int32), cur[nz].copy())
            else:
                self.cols[self.hour] = (None, cur.copy())
        self.cur[:] = 0.0
        self.hour = hour
        for h in [h for h in self.cols if h <= hour - self.slots]:
            del self.cols[h]
        self._refresh_tails()

    def add(self, rows: np.ndarray, nbytes: np.ndarray) -> None:
        """Add outbound bytes of the current hour (``rows`` unique)."""
        self.cur[rows] += nbytes.astype(np.float32)

    def flag(self, rows: np.ndarray) -> None:
        """Mark hosts with a finding: their current periods are not learnt."""
        self.flags[rows] = np.uint8((1 << len(self.horizons)) - 1)

    # -- reading (pure) ----------------------------------------------------------------
    def history(self, rows: np.ndarray, hour: int) -> np.ndarray:
        """Hours of history per host (0 for a host first seen in ``hour``)."""
        return hour - self.first_hour[rows].astype(np.int64)

    def warm(self, rows: np.ndarray, hour: int, warmup_hours: float) -> np.ndarray:
        return np.asarray(self.history(rows, hour) >= warmup_hours)

    def ordered(self, rows: np.ndarray, hour: int) -> np.ndarray:
        """Bytes of ``rows`` newest first: column 0 is ``hour``, column j is ``hour - j``."""
        out = np.zeros((len(rows), self.slots))
        for j in range(self.slots):
            h = hour - j
            if h == self.hour or h in self.cols:
                out[:, j] = self._column(h, rows)
        return out

    def _totals(self, rows: np.ndarray, hour: int, extra: np.ndarray) -> np.ndarray:
        """Trailing totals per horizon ending with (all of) ``hour``, shape (rows, horizons)."""
        if hour != self.hour:
            x = self.ordered(rows, hour)
            x[:, 0] += extra
            csum = np.cumsum(x, axis=1)
            return np.stack([csum[:, h - 1] for h in self.horizons], axis=1)
        x0 = self.cur[rows].astype(np.float64) + extra
        return x0[:, None] + self.tails[:, rows].T

    def score(self, rows: np.ndarray, hour: int, frac: float, extra: np.ndarray) -> HorizonScores:
        """Trailing totals at ``frac`` of ``hour`` (plus ``extra`` bytes not yet in the ring)."""
        obs = self._totals(rows, hour, extra)
        for i, h in enumerate(self.horizons):
            if h < self.slots:
                obs[:, i] += (1.0 - frac) * self._column(hour - h, rows)
        nh = len(self.horizons)
        typical = np.empty_like(obs)
        z = np.empty_like(obs)
        warm = np.empty(obs.shape, dtype=bool)
        samples = np.empty(obs.shape, dtype=np.int64)
        for i, b in enumerate(self.base):
            typical[:, i] = b.typical(rows)[:, 0]
            floored = np.maximum(obs[:, i : i + 1], self.floor_per_hour * self.horizons[i])
            z[:, i] = b.z(rows, floored)[:, 0]
            warm[:, i] = b.warm(rows)
            samples[:, i] = b.samples(rows)
        assert nh == obs.shape[1]
        floor = self.floor_per_hour * np.asarray(self.horizons, dtype=np.float64)
        peer_z = (np.log1p(np.maximum(obs, floor)) - self.peer_loc) / np.maximum(
            self.peer_spread, self.min_spread
        )
        peer_typ = np.broadcast_to(np.expm1(self.peer_loc), obs.shape).copy()
        return HorizonScores(obs, typical, z, warm, peer_typ, peer_z, samples)

    def past_max(self, rows: np.ndarray, hour: int, horizon: int) -> np.ndarray:
        """Largest ``horizon``-hour total in the ring that ends before the current window.

        The hours of the current trailing window are excluded, so this is "the host's
        record over the last week" — a recurring nightly backup sets it every night.
        """
        h = horizon
        if 2 * h + 1 > self.slots:
            return np.zeros(len(rows))
        x = self.ordered(rows, hour)
        c = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(x, axis=1)], axis=1)
        sums = c[:, h + 1 + h :] - c[:, h + 1 : self.slots + 1 - h]
        return np.asarray(sums.max(axis=1))

    # -- learning -------------------------------------------------------------------
    def learn_hour(self, hour: int) -> None:
        """``hour`` is complete: learn each horizon whose step ends with it, refresh peers."""
        n = len(self.names)
        if not n:
            return
        rows = np.arange(n)
        steps = [i for i, h in enumerate(self.horizons) if not (hour + 1) % min(h, 24)]
        if not steps:
            return
        totals = self._totals(rows, hour, np.zeros(n))
        first = self.first_hour[:n].astype(np.int64)
        hist = np.where(first >= 0, hour - first + 1, 0)  # free rows: 0
        for i in steps:
            h, b = self.horizons[i], self.base[i]
            bit = np.uint8(1 << i)
            covered = hist >= h
            allow = covered & ((self.flags[:n] & bit) == 0)
            value = np.maximum(totals[:, i : i + 1], self.floor_per_hour * h)
            b.learn(rows, value, allow=allow, t=hour)
            self.flags[:n] &= ~bit
            warm = b.warm(rows)
            if warm.sum() >= 3:
                loc = b.loc[rows[warm], 0].astype(np.float64)
                med = float(np.median(loc))
                self.peer_loc[i] = med
                self.peer_spread[i] = max(
                    float(np.median(np.abs(loc - med))) * _MAD_TO_SIGMA, self.min_spread
                )
                self.peer_n[i] = int(warm.sum())

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        n = len(self.names)  # rows past the last host are spare capacity: not pickled
        for k in ("cur", "first_hour", "flags", "last_hour"):
            state[k] = state[k][:n].copy()
        del state["tails"]  # derived from cols
        state["base"] = [_trimmed(b, n) for b in self.base]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        n = len(self.first_hour)
        for b in self.base:
            b.ensure(n)
        self.tails = np.zeros((len(self.horizons), n))
        if self.hour >= 0:
            self._refresh_tails()

    def nbytes(self) -> int:
        arrays = sum(
            a.nbytes for a in (self.cur, self.tails, self.first_hour, self.flags, self.last_hour)
        )
        cols = sum(v.nbytes + (0 if r is None else r.nbytes) for r, v in self.cols.values())
        return int(
            arrays
            + cols
            + sum(b.nbytes() for b in self.base)
            + sum(len(s) + 90 for s in self.names)
        )


def _trimmed(b: RobustBaseline, n: int) -> RobustBaseline:
    """A copy of ``b`` holding only its first ``n`` rows (for pickling)."""
    t = RobustBaseline.__new__(RobustBaseline)
    t.__dict__.update(b.__dict__)
    for k in ("n", "loc", "spread", "ref_loc", "ref_spread", "last_seen"):
        setattr(t, k, getattr(b, k)[:n].copy())
    return t

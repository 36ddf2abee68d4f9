"""Data exfiltration, fast and slow: :class:`ExfilDetector` (``exfil``).

Two complementary signals, both per internal host sending to outside (``src_inside``
and not ``dst_inside``; for unidirectional sources the reverse records count as the
download side):

**Volume horizons** (fast exfiltration). Outbound bytes per host over trailing 1 h / 6 h
/ 24 h / 7 d, from a fixed ring of hourly buckets (:mod:`._horizons`), are compared with
the host's own robust baseline (log scale, median/MAD, one sample per horizon step) and
with the peer group (median/MAD of all warm hosts' baselines). A horizon fires when it
is far above both (``z_threshold``, ``peer_z_threshold``), the excess is at least
``min_bytes`` and it beats the host's own record for that horizon over the last week by
``record_ratio``, and unless most of it goes to a destination the host already sent at
least 1/``recurring_ratio`` of today's volume to on an earlier day — so a nightly backup
(same destination every night) is part of the baseline and never fires.

**Drip to a new, rare destination** (slow exfiltration). Per (host, destination) a
one-sided CUSUM accumulates upload bytes to destinations that are *new* (first seen,
network-wide, more than ``new_after_hours`` after the host itself was first seen — what
it contacts in its first hours is its standing set; this is shorter than the alerting
warm-up so that a drip starting right when the host turns warm still counts) and *rare* (at most ``rare_hosts``
internal hosts contact them), weighted by upload/download asymmetry; it drains by
``cusum_k`` bytes per hour, so ordinary small uploads never add up, and fires at
``cusum_h``. A per-host CUSUM over the same bytes catches drips spread over many such
destinations. Episode = destination IP; the finding is re-emitted as the upload grows.

Score before learn, warm-up (``warmup_hours`` of history per host; baselines have their
own warm-up in samples), no learning from periods with findings, capped baseline moves
(all via :class:`~pipelines.baselines.RobustBaseline`). Memory is bounded: ``top_k``
destinations per host, ``max_destinations`` network-wide (LRU), a 169-slot ring per host.

>>> det = ExfilDetector()
>>> det.params()["cusum_h"]
8000000.0
>>> det.process_window(Window.of(0, 300.0))
[]
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.detectors._exfil_pairs import DestinationTable, PairTable, size_bins
from pipelines.detectors._exfil_text import host_finding, merge, pair_finding
from pipelines.detectors._horizons import HostHorizons
from pipelines.detectors.base import Detector, Finding, Window
from pipelines.records import DnsBatch, FlowBatch
from pipelines.sketches import factorize, hash32

__all__ = ["ExfilDetector"]

CLOUD_STORAGE_DOMAINS = (
    "dropbox.com", "dropboxapi.com", "dropboxusercontent.com", "drive.google.com",
    "storage.googleapis.com", "blob.core.windows.net", "onedrive.live.com", "1drv.com",
    "sharepoint.com", "box.com", "mega.nz", "mega.co.nz", "backblazeb2.com",
    "wetransfer.com", "pcloud.com", "s3.amazonaws.com",
)  # fmt: skip


@dataclass
class _Features:
    window: Window
    hour: int
    frac: float
    hosts: np.ndarray  # host rows with outbound bytes in the window
    host_out: np.ndarray
    pairs: np.ndarray  # pair rows touched in the window
    w_out: np.ndarray
    w_conns: np.ndarray
    scored: Any = None


@dataclass
class _Scored:
    s_pair: np.ndarray  # tentative pair CUSUM after this window
    x_pair: np.ndarray  # bytes added to it
    new_rare: np.ndarray  # pair goes to a new, rare destination
    h_rows: np.ndarray  # hosts whose rare-destination CUSUM moved
    s_host: np.ndarray
    host_emit: dict[int, float]  # host row -> observed value reported
    pair_emit: list[int]
    firing: list[int]  # hosts whose volume horizons fire (emitted or not)


def _sums(
    keys: list[np.ndarray], vals: list[list[np.ndarray]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct keys (sorted) and, per value list, the float64 sum of their values over
    several (key, value) arrays (each array's keys distinct).

    >>> k, (v,) = _sums([np.array([3, 1]), np.array([3])], [[np.array([1.0, 2.0]), np.array([4.0])]])
    >>> k.tolist(), v.tolist()
    ([1, 3], [2.0, 5.0])
    """
    if not keys:
        return np.zeros(0, dtype=np.int64), [np.zeros(0) for _ in vals]
    if len(keys) == 1:  # distinct already: just sort
        order = np.argsort(keys[0], kind="stable")
        return keys[0][order].astype(np.int64), [v[0][order].astype(np.float64) for v in vals]
    k = np.concatenate(keys).astype(np.int64)
    uk, inv = np.unique(k, return_inverse=True)
    return uk, [
        np.bincount(inv, weights=np.concatenate(v).astype(np.float64), minlength=len(uk))
        for v in vals
    ]


class ExfilDetector(Detector):
    """Fast and slow exfiltration per internal host (see module docstring)."""

    name = "exfil"

    def __init__(
        self,
        horizons_hours: Sequence[int] = (1, 6, 24, 168),
        horizon_warmups: Sequence[int] = (24, 4, 3, 4),
        warmup_hours: float = 24.0,
        new_after_hours: float = 12.0,
        z_threshold: float = 3.0,
        peer_z_threshold: float = 3.0,
        min_bytes: Sequence[float] = (2e8, 3e8, 5e8, 2e9),
        record_ratio: float = 2.0,
        recurring_ratio: float = 10.0,
        cusum_k: float = 2.5e5,
        cusum_h: float = 8e6,
        host_cusum_h: float = 3e7,
        min_pair_conns: int = 20,
        rare_hosts: int = 2,
        asym_min: float = 3.0,
        top_k: int = 16,
        max_destinations: int = 200_000,
        reemit_growth: float = 1.25,
        reemit_windows: int = 12,
        small_chunk_bytes: float = 65536.0,
        web_ports: Sequence[int] = (80, 443, 8080, 8443),
        cloud_storage_domains: Sequence[str] = CLOUD_STORAGE_DOMAINS,
        cloud_storage_cidrs: Sequence[str] = (),
        dns_cache: int = 50_000,
        baseline_rate: float = 0.05,
        baseline_max_step: float = 0.5,
        volume_floor: float = 1e5,
        idle_days: float = 30.0,
    ) -> None:
        self.horizons_hours = tuple(horizons_hours)
        self.horizon_warmups = tuple(horizon_warmups)
        self.warmup_hours = warmup_hours
        self.new_after_hours = new_after_hours
        self.z_threshold = z_threshold
        self.peer_z_threshold = peer_z_threshold
        self.min_bytes = tuple(min_bytes)
        self.record_ratio = record_ratio
        self.recurring_ratio = recurring_ratio
        self.cusum_k = cusum_k
        self.cusum_h = cusum_h
        self.host_cusum_h = host_cusum_h
        self.min_pair_conns = min_pair_conns
        self.rare_hosts = rare_hosts
        self.asym_min = asym_min
        self.top_k = top_k
        self.max_destinations = max_destinations
        self.reemit_growth = reemit_growth
        self.reemit_windows = reemit_windows
        self.small_chunk_bytes = small_chunk_bytes
        self.web_ports = tuple(web_ports)
        self.cloud_storage_domains = tuple(cloud_storage_domains)
        self.cloud_storage_cidrs = tuple(cloud_storage_cidrs)
        self.dns_cache = dns_cache
        self.baseline_rate = baseline_rate
        self.baseline_max_step = baseline_max_step
        self.volume_floor = volume_floor
        self.idle_days = idle_days
        self._evict_day = -(10**9)
        self._cloud_nets = [ipaddress.ip_network(c, strict=False) for c in self.cloud_storage_cidrs]
        self.hz = HostHorizons(
            self.horizons_hours,
            self.horizon_warmups,
            rate=baseline_rate,
            max_step=baseline_max_step,
            floor_per_hour=volume_floor,
        )
        self.dsts = DestinationTable(capacity=max_destinations)
        self.pairs = PairTable(top_k=top_k, hist_bins=20, dests=self.dsts)
        self.domains: dict[str, str] = {}  # external IP -> last DNS name that resolved to it
        n = 0
        self.h_cusum = np.zeros(n)
        self.h_cusum_t = np.zeros(n)
        self.h_emit = np.zeros(n)
        self.h_fire_win = np.full(n, -(10**9), dtype=np.int32)
        # the open window, one entry per ingest call: (host rows, bytes) and
        # (pair rows, upload, upload connections, origin, offset of the last record)
        self._w_hosts: list[tuple[np.ndarray, np.ndarray]] = []
        self._w_pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    # -- ingest -----------------------------------------------------------------------
    def entities(self) -> int:
        return len(self.hz)

    def _grow_hosts(self) -> None:
        n, have = len(self.hz.names), len(self.h_cusum)
        if n <= have:
            return
        g = max(n, have + have // 4, 64) - have
        self.h_cusum = np.concatenate([self.h_cusum, np.zeros(g)])
        self.h_cusum_t = np.concatenate([self.h_cusum_t, np.zeros(g)])
        self.h_emit = np.concatenate([self.h_emit, np.zeros(g)])
        self.h_fire_win = np.concatenate([self.h_fire_win, np.full(g, -(10**9), np.int32)])

    def _ingest_dns(self, dns: DnsBatch) -> None:
        """Remember which name last resolved to each address (A/AAAA answers; capped)."""
        keep = (dns.answers_n > 0) & ((dns.qtype == 1) | (dns.qtype == 28))
        if not keep.any():
            return
        cache = self.domains
        answers, queries = dns.answers[keep].tolist(), dns.query[keep].tolist()
        cache.update((a, q) for a, q in zip(answers, queries, strict=True) if a and "," not in a)
        for a, q in zip(answers, queries, strict=True):
            if a and "," in a:
                cache.update((ip.strip(), q) for ip in a.split(",") if ip.strip())
        over = len(cache) - self.dns_cache
        if over > 0:  # oldest insertions first
            for ip in list(itertools.islice(cache, over)):
                del cache[ip]

    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        if len(dns):
            self._ingest_dns(dns)
        if not len(flows):
            return
        up = np.flatnonzero(flows.src_inside & ~flows.dst_inside)
        back = np.flatnonzero(~flows.src_inside & flows.dst_inside & ~flows.bidirectional)
        if not len(up) and not len(back):
            return
        n_up = len(up)
        host = np.concatenate([flows.src[up], flows.dst[back]])
        ext = np.concatenate([flows.dst[up], flows.src[back]])
        b_out = np.concatenate([flows.bytes_out[up], np.zeros(len(back), np.int64)]).astype(float)
        b_in = np.concatenate([flows.bytes_in[up], flows.bytes_out[back]]).astype(float)
        port = np.concatenate([flows.dst_port[up], flows.src_port[back]])
        ts = np.concatenate([flows.ts_start[up], flows.ts_start[back]])
        idx = np.concatenate([up, back])
        hc, hosts = factorize(host)
        dc, dsts = factorize(ext)
        hrows = self.hz.rows(hosts, int(window.start // 3600))  # type: ignore[arg-type]
        self._grow_hosts()
        per_host = np.bincount(hc, weights=b_out, minlength=len(hosts))
        pos = per_host > 0
        self._w_hosts.append((hrows[pos], per_host[pos]))
        # destinations, network-wide
        dmin = np.full(len(dsts), np.inf)
        np.minimum.at(dmin, dc, ts)
        drows, new, gone, gone_keys = self.dsts.observe(dsts, dmin, tick=window.index)  # type: ignore[arg-type]
        if len(gone):
            self.pairs.orphan(gone, gone_keys)
        if self.pairs.orphan_rows and new.any():
            fresh = np.flatnonzero(new)
            self.pairs.relink([dsts[i] for i in fresh.tolist()], drows[fresh])  # type: ignore[misc]
        # (host, destination) groups
        nd = len(dsts)
        uk, inv = np.unique(hc * nd + dc, return_inverse=True)
        gh, gd = uk // nd, uk % nd
        self.dsts.add_hosts(drows[gd], hash32(hosts)[gh])  # type: ignore[arg-type]
        P = self.pairs
        g = len(uk)
        wo = np.bincount(inv, weights=b_out, minlength=g)
        rows, victims = P.rows(hrows[gh], drows[gd], window.end, upload=wo)
        if len(victims):  # evicted pairs: what the open window had for them goes with them
            self._w_pairs = [
                tuple(a[keep] for a in e)  # type: ignore[misc]
                for e in self._w_pairs
                for keep in [~np.isin(e[0], victims)]
            ]
        if (rows < 0).any():  # more new destinations than top_k in one batch: keep the largest
            ok = rows >= 0
            remap = np.cumsum(ok) - 1
            sel = ok[inv]
            inv, b_out, b_in, port, ts = remap[inv[sel]], b_out[sel], b_in[sel], port[sel], ts[sel]
            idx, is_up = idx[sel], np.flatnonzero(sel) < n_up
            rows, wo, g = rows[ok], wo[ok], int(ok.sum())
        else:
            is_up = np.arange(len(idx)) < n_up
        wi = np.bincount(inv, weights=b_in, minlength=g)
        is_conn = is_up
        wc = np.bincount(inv, weights=is_conn, minlength=g).astype(np.int64)
        P.cols["out"][rows] += wo
        P.cols["inb"][rows] += wi
        P.cols["conns"][rows] += wc
        P.cols["busy"][rows] |= (wc > 0).astype(np.int8)
        tmin = np.full(g, np.inf)
        np.minimum.at(tmin, inv, ts)
        tmax = np.full(g, -np.inf)
        np.maximum.at(tmax, inv, ts)
        P.cols["first_ts"][rows] = np.fmin(P.first_ts[rows], tmin)
        P.cols["last_ts"][rows] = np.fmax(P.last_ts[rows], tmax)
        last = np.zeros(g, dtype=np.int64)
        np.maximum.at(last, inv, np.arange(len(idx)))
        P.cols["port"][rows] = port[last]
        nb = P.hist_bins
        c = inv[is_conn] * nb + size_bins(b_out[is_conn], nb)
        P.add_hist(rows, np.bincount(c, minlength=g * nb).reshape(g, nb))
        entry = (rows, wo, wc, flows.origin[idx[last]], np.asarray(flows.offset[idx[last]]))
        if len(victims):  # a pair found in this batch may have been evicted for a new one:
            # its row then appears twice and, as with ``+=`` above, the last occurrence counts
            keep = np.sort(len(rows) - 1 - np.unique(rows[::-1], return_index=True)[1])
            if len(keep) < len(rows):
                entry = tuple(a[keep] for a in entry)  # type: ignore[assignment]
        self._w_pairs.append(entry)

    # -- close ------------------------------------------------------------------------
    def close(self, window: Window) -> _Features:
        hour = int(window.start // 3600)
        self.hz.advance(hour)
        frac = min(max((window.end - hour * 3600.0) / 3600.0, 0.0), 1.0)
        hw = self._w_hosts
        hosts, (host_out,) = _sums([e[0] for e in hw], [[e[1] for e in hw]])
        w = self._w_pairs
        prow, (w_out, w_conns) = _sums([e[0] for e in w], [[e[1] for e in w], [e[2] for e in w]])
        w_conns = w_conns.astype(np.int64)
        self._w_hosts, self._w_pairs = [], []
        self.hz.add(hosts, host_out)
        P = self.pairs
        P.cols["busy"][prow] = 0
        if w:  # last record position per pair (the last ingest call wins, as it overwrote)
            r = np.concatenate([e[0] for e in w]) if len(w) > 1 else w[0][0]
            if len(w) > 1:
                last = len(r) - 1 - np.unique(r[::-1], return_index=True)[1]
            else:  # one call: its rows are distinct
                last = np.argsort(r, kind="stable")
            P.w_rows = r[last]
            P.w_origin = (np.concatenate([e[3] for e in w]) if len(w) > 1 else w[0][3])[last]
            P.w_offset = (np.concatenate([e[4] for e in w]) if len(w) > 1 else w[0][4])[last]
        # active hours and the moments of completed hourly uploads
        moved = P.last_hour[prow] != hour
        done = prow[moved & (P.last_hour[prow] >= 0)]
        P.set("hsum", done, P.get("hsum", done) + P.hour_out[done])
        P.set("hsq", done, P.get("hsq", done) + P.hour_out[done] ** 2)
        P.cols["hour_out"][prow[moved]] = 0.0
        P.cols["hours"][prow[moved]] += 1
        old_day = P.last_hour[prow] // 24  # before last_hour moves (-1 // 24: no day yet)
        P.cols["last_hour"][prow] = hour
        P.cols["hour_out"][prow] += w_out
        day = int(window.start // 86400)
        moved = old_day != day
        pm = prow[moved]
        P.set("day_max", pm, np.maximum(P.get("day_max", pm), P.day_out[pm]))
        P.cols["day_out"][prow[moved]] = 0.0
        P.cols["day_out"][prow] += w_out
        decay = 0.5 ** ((window.end - P.ew_t[prow]) / 3600.0)
        P.cols["ew_out"][prow] = P.ew_out[prow] * decay + w_out
        P.cols["ew_t"][prow] = window.end
        return _Features(window, hour, frac, hosts, host_out, prow, w_out, w_conns)

    # -- score (pure) -----------------------------------------------------------------
    def _compute(self, f: _Features) -> _Scored:
        P, win = self.pairs, f.window
        prow = f.pairs
        hrow = P.host[prow]
        first_dst, nh = self.dsts.stats_rows(P.drow[prow].astype(np.int64))
        first = np.fmin(first_dst, P.first_ts[prow])
        known_until = (self.hz.first_hour[hrow] + self.new_after_hours) * 3600.0
        new_rare = (first >= known_until) & (nh <= self.rare_hosts)
        host_warm = self.hz.warm(hrow, f.hour, self.warmup_hours)
        ratio = P.out[prow] / (P.inb[prow] + 1.0)
        asym = np.clip((ratio - 1.0) / max(self.asym_min - 1.0, 1e-9), 0.0, 1.0)
        x = np.where(new_rare, f.w_out * asym, 0.0)
        k = self.cusum_k / 3600.0
        s0 = np.maximum(
            P.get("cusum", prow) - k * np.maximum(win.end - P.get("cusum_t", prow), 0.0), 0.0
        )
        s1 = np.where(x > 0, s0 + x, s0)
        ok = (P.conns[prow] >= self.min_pair_conns) | (s1 >= 8 * self.cusum_h)
        fire = new_rare & host_warm & (s1 >= self.cusum_h) & ok
        grown = P.out[prow] >= np.maximum(P.get("emitted", prow) * self.reemit_growth, 1.0)
        pair_emit = prow[fire & grown].tolist()
        # host-wide CUSUM over bytes to new rare destinations (drips over many destinations)
        h_rows, inv = np.unique(hrow[x > 0], return_inverse=True)
        xs = np.bincount(inv, weights=x[x > 0], minlength=len(h_rows))
        hs0 = np.maximum(self.h_cusum[h_rows] - k * (win.end - self.h_cusum_t[h_rows]), 0.0)
        s_host = hs0 + xs
        host_emit: dict[int, float] = {}
        for h, s in zip(h_rows.tolist(), s_host.tolist(), strict=True):
            warm_h = bool(self.hz.warm(np.array([h]), f.hour, self.warmup_hours)[0])
            if warm_h and s >= self.host_cusum_h and s >= self.h_emit[h] * self.reemit_growth:
                slots = P.slots_of(h)
                cur = P.get("cusum", slots)
                pos = np.minimum(np.searchsorted(prow, slots), len(prow) - 1)
                hit = prow[pos] == slots
                cur[hit] = s1[pos[hit]]
                if float(cur.max(initial=0.0)) < self.cusum_h / 2:  # spread, no single pair
                    host_emit[h] = -s  # negative: a CUSUM value, not a horizon total
        # volume horizons
        firing: list[int] = []
        if len(f.hosts):
            s = self.hz.score(f.hosts, f.hour, f.frac, np.zeros(len(f.hosts)))
            warm = self.hz.warm(f.hosts, f.hour, self.warmup_hours)[:, None] & s.warm
            floor = np.asarray(self.min_bytes[: len(self.horizons_hours)])
            fire_h = (
                warm
                & (s.z >= self.z_threshold)
                & (s.peer_z >= self.peer_z_threshold)
                & (s.obs - s.typical >= floor)
            )
            for i in np.flatnonzero(fire_h.any(axis=1)).tolist():
                r = int(f.hosts[i])
                ok_h = [
                    j
                    for j in np.flatnonzero(fire_h[i]).tolist()
                    if s.obs[i, j]
                    >= self.record_ratio
                    * self.hz.past_max(np.array([r]), f.hour, self.horizons_hours[j])[0]
                ]
                if not ok_h or self._recurring(r, win.end):
                    continue
                obs = float(s.obs[i, ok_h].max())
                firing.append(r)
                # a new episode after reemit_windows quiet windows, else only when it grows
                fresh = win.index - self.h_fire_win[r] > self.reemit_windows
                if fresh or obs >= self.h_emit[r] * self.reemit_growth:
                    host_emit[r] = obs
        return _Scored(s1, x, new_rare, h_rows, s_host, host_emit, pair_emit, firing)

    def _recurring(self, h: int, now: float) -> bool:
        """Most of the host's recent upload goes to a destination it already sent a
        comparable daily volume to on an earlier day (nightly backup, routine sync)."""
        P = self.pairs
        slots = P.slots_of(h)
        if not len(slots):
            return False
        ew = P.ew_out[slots] * 0.5 ** ((now - P.ew_t[slots]) / 3600.0)
        top = int(slots[np.argmax(ew)])
        dominant = float(ew.max()) >= 0.5 * float(ew.sum())
        day_max = float(P.get("day_max", np.array([top]))[0])
        return dominant and day_max * self.recurring_ratio >= float(P.day_out[top])

    def score(self, features: _Features) -> list[Finding]:
        f = features
        if not len(f.pairs) and not len(f.hosts):
            f.scored = None
            return []
        sc = f.scored = self._compute(f)
        out: dict[tuple[int, str], Finding] = {}
        for r in sc.pair_emit:
            fd = pair_finding(self, f, r, float(sc.s_pair[np.searchsorted(f.pairs, r)]))
            out[(int(self.pairs.host[r]), fd.episode)] = fd
        for h, val in sc.host_emit.items():
            fd = host_finding(self, f, h, val, sc)
            key = (h, fd.episode)
            out[key] = merge(fd, out[key]) if key in out else fd
        return list(out.values())

    # -- learn ------------------------------------------------------------------------
    def learn(self, features: _Features, findings: list[Finding]) -> None:
        f = features
        P = self.pairs
        sc = f.scored if f.scored is not None or not len(f.pairs) else self._compute(f)
        if sc is not None:
            P.set("cusum", f.pairs, sc.s_pair)
            has = f.pairs[P.ext_of(f.pairs) >= 0]  # (cusum_t matters only where cusum > 0)
            P.set("cusum_t", has, f.window.end)
            P.add_sample(f.pairs[sc.x_pair > 0])
            P.cols["rare_new"][f.pairs] = sc.new_rare
            self.h_cusum[sc.h_rows] = sc.s_host
            self.h_cusum_t[sc.h_rows] = f.window.end
            for r in sc.pair_emit:
                P.set("emitted", np.array([r]), P.out[r])
            for h, val in sc.host_emit.items():
                self.h_emit[h] = abs(val)
            self.h_fire_win[sc.firing] = f.window.index
        if len(P.w_rows):
            P.w_rows = np.zeros(0, dtype=np.int64)
            P.w_origin = np.empty(0, dtype=object)
            P.w_offset = np.zeros(0, dtype=np.int64)
        if findings:
            self.hz.flag(self.hz.known([fd.entity for fd in findings]))
        if int(f.window.end // 3600) > f.hour or f.window.end % 3600 == 0:
            self.hz.learn_hour(f.hour)
        day = int(f.window.start // 86400)
        if day != self._evict_day:  # once a day: forget hosts idle for idle_days
            self._evict_day = day
            self._evict(f.hour - int(self.idle_days * 24))

    def _evict(self, older_than_hour: int) -> None:
        """Forget hosts not seen since ``older_than_hour``: horizons, baselines, pairs, CUSUMs."""
        stale = self.hz.evict(older_than_hour)
        if not len(stale):
            return
        stale = stale[stale < len(self.h_cusum)]
        self.h_cusum[stale] = 0.0
        self.h_cusum_t[stale] = 0.0
        self.h_emit[stale] = 0.0
        self.h_fire_win[stale] = -(10**9)
        self.pairs.forget_hosts(stale)

    def nbytes(self) -> int:
        """Approximate state size in bytes (per-host arrays, pair table, destinations)."""
        host = sum(a.nbytes for a in (self.h_cusum, self.h_cusum_t, self.h_emit, self.h_fire_win))
        return int(host + self.hz.nbytes() + self.pairs.nbytes() + 100 * len(self.domains))

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("idle_days", 30.0)  # snapshots from before eviction
        state.setdefault("_evict_day", -(10**9))
        self.__dict__.update(state)

    # -- explanation ------------------------------------------------------------------
    def _is_cloud(self, dst: str, domain: str) -> bool:
        if domain and any(
            domain == d or domain.endswith("." + d) for d in self.cloud_storage_domains
        ):
            return True
        if self._cloud_nets:
            try:
                a = ipaddress.ip_address(dst)
            except ValueError:
                return False
            return any(a.version == n.version and a in n for n in self._cloud_nets)
        return False
